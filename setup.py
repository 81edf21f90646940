"""vt_keras: multi-modal video learning on Keras 3 / TensorFlow 2.21."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

# Versions that were installed and tested together. tensorflow-text must match
# the TensorFlow minor version exactly (its kernels link against TF's ABI).
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorboard==2.21.0",  # tf.summary needs it; TensorFlow 2.21 no longer pulls it in
    "keras==3.15.1",
    "absl-py==2.5.1",
    "ml-collections==1.1.0",
    "numpy>=1.26,<3",
    "matplotlib>=3.8,<4",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",  # what the suite was last run with from a fresh virtualenv
        "pytest-xdist>=3.5,<4",
        "scipy>=1.11,<2",
        "tensorflow-serving-api==2.21.0",
    ],
    # The other Keras backends of vt_keras.layers and vt_keras.losses (versions tested
    # here). On Linux, PyPI's torch wheel is the CUDA build (several GB): for the CPU
    # build add --extra-index-url https://download.pytorch.org/whl/cpu (README).
    "jax": ["jax==0.10.2", "jaxlib==0.10.2"],
    "torch": ["torch==2.13.0"],
    # Peers that bench/ measures against; never imported by the library.
    "bench": [
        "soft-dtw==0.1.6",
        "tslearn==0.10.0",
    ],
}

CLI = ["train", "evaluate", "export", "predict", "make_data", "compare", "search", "plot_attention", "plot_alignment",
       "convert_features", "evaluate_segments"]

setup(
    name="vt_keras",
    version="0.1.0",
    description="Keras 3 layers, losses and a YouTube-8M-style pipeline for multi-modal video learning",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["vt_keras", "vt_keras.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [f"vt-{name.replace('_', '-')}=vt_keras.cli.{name}:run" for name in CLI],
    },
)
