"""Runs the backend checks in a process of its own: `KERAS_BACKEND=jax python -m tests.backends.worker ...`.

The backend is fixed when Keras is imported, so the tests (a TensorFlow
process) start one worker per backend and compare what it writes:

    python -m tests.backends.worker run <directory>   # writes <directory>/<backend>.npz and .json

The worker blocks TensorFlow's import first, as on a machine without it,
and records which TensorFlow modules got imported all the same (none, for
the test to pass). It imports and calls every public layer and loss, puts
every layer through `vt_keras.testing.run_layer_test`, computes every loss's
value and gradients, the soft-DTW kernel's values and gradients on the
reference inputs (float64 too where the backend has it), loads the
classifier that the TensorFlow process saved as
`<directory>/tensorflow.keras`, and saves its own.
"""
import json
import os
import sys
import time
import traceback

import numpy as np


def _block_tensorflow():
    """Makes `import tensorflow` fail, as on a machine where it is not installed.

    A `None` in `sys.modules` is Python's own marker of a module that cannot
    be imported: `import` raises ModuleNotFoundError, `importlib.util.find_spec`
    answers None.
    """
    for name in ("tensorflow", "tensorflow_text"):
        sys.modules[name] = None


def _imports(results):
    """Imports every public module; the steps after it call every layer and loss (TensorFlow blocked)."""
    import keras

    import vt_keras
    import vt_keras.distributed
    import vt_keras.layers
    import vt_keras.losses
    import vt_keras.metrics.retrieval
    import vt_keras.ops
    import vt_keras.testing

    vt_keras.metrics.retrieval.retrieval_metrics(np.eye(4), np.eye(4) + 0.1)
    results.update(backend=keras.backend.backend(), vt_keras=vt_keras.__version__)


def _tensorflow_modules():
    return sorted(m for m, module in sys.modules.items()
                  if module is not None and m.split(".")[0] in ("tensorflow", "tensorflow_text"))


def _layer_tests(results):
    import keras

    from tests.backends import cases
    from vt_keras.testing import run_layer_test

    # JAX runs an eager fit op by op, compiling each primitive: a compiled step is faster.
    eager = keras.backend.backend() != "jax"
    for name, cls, init, inputs, mask, call_kwargs, shape, options in cases.layer_cases():
        keras.utils.set_random_seed(1234)  # as tests/conftest.py does for every TensorFlow test
        try:
            run_layer_test(cls, init, inputs, mask=mask, call_kwargs=call_kwargs, expected_output_shape=shape,
                           train_eagerly=eager, **options)
            results[f"layer/{name}"] = "ok"
        except Exception:  # reported to the test, which fails with it
            results[f"layer/{name}"] = traceback.format_exc(limit=4)


def _losses(arrays):
    from keras import ops

    from tests.backends import cases
    from vt_keras.backend import value_and_grad

    for name, (fn, args) in cases.loss_cases().items():
        value, grads = value_and_grad(fn, args)
        arrays[f"loss/{name}/value"] = ops.convert_to_numpy(value)
        for i, g in enumerate(grads):
            arrays[f"loss/{name}/grad{i}"] = ops.convert_to_numpy(g)


def _soft_dtw(arrays, directory):
    import keras
    from keras import ops

    from vt_keras.backend import value_and_grad
    from vt_keras.losses import soft_dtw, soft_dtw_alignment

    inputs = np.load(os.path.join(directory, "soft_dtw_inputs.npz"))
    dtypes = ["float32"] + (["float64"] if _has_float64(keras.backend.backend()) else [])
    for dtype in dtypes:
        for key in ("small", "medium"):
            cost = inputs[key].astype(dtype)
            rows, cols = inputs[f"{key}_rows"], inputs[f"{key}_cols"]
            for gamma in inputs["gammas"]:
                gamma = float(gamma)
                # The brute force checks the band on the small pairs.
                for band in (None, 1) if key == "small" else (None,):
                    def total(c):
                        values = soft_dtw(c, gamma, row_lengths=rows, col_lengths=cols, bandwidth=band)
                        # Distinct weights: each pair's gradient is scaled by its own factor.
                        finite = ops.where(ops.isfinite(values), values, 0.0)
                        return ops.sum(ops.multiply(finite, inputs[f"{key}_weights"].astype(dtype)))

                    value, (grad,) = value_and_grad(total, [cost])
                    tag = f"soft_dtw/{dtype}/{key}/{gamma}/{band}"
                    arrays[f"{tag}/values"] = ops.convert_to_numpy(
                        soft_dtw(cost, gamma, row_lengths=rows, col_lengths=cols, bandwidth=band))
                    arrays[f"{tag}/grad"] = ops.convert_to_numpy(grad)
        arrays[f"soft_dtw_alignment/{dtype}"] = ops.convert_to_numpy(
            soft_dtw_alignment(inputs["medium"].astype(dtype), 0.5))


def _has_float64(backend):
    if backend != "jax":
        return True
    import jax.numpy as jnp

    return jnp.zeros(1, "float64").dtype == jnp.float64


def _models(arrays, directory, backend):
    import keras

    from tests.backends import cases

    inputs = cases.model_inputs()
    loaded = keras.saving.load_model(os.path.join(directory, "tensorflow.keras"))
    arrays["model/from_tensorflow"] = keras.ops.convert_to_numpy(loaded(inputs))
    keras.utils.set_random_seed(5)
    model = cases.build_classifier()
    model.save(os.path.join(directory, f"{backend}.keras"))
    arrays["model/own"] = keras.ops.convert_to_numpy(model(inputs))


def run(directory):
    # Everything below runs as on a machine without TensorFlow.
    _block_tensorflow()
    if os.environ.get("KERAS_BACKEND") == "jax":
        # Before Keras: float64 for the soft-DTW reference comparison.
        import jax

        jax.config.update("jax_enable_x64", True)
    import keras

    backend = keras.backend.backend()
    results, arrays = {}, {}
    steps = {"imports": _imports, "layers": _layer_tests, "losses": lambda r: _losses(arrays),
             "soft_dtw": lambda r: _soft_dtw(arrays, directory), "models": lambda r: _models(arrays, directory, backend)}
    for name, step in steps.items():
        start = time.perf_counter()
        try:
            step(results)
        except Exception:
            results[f"error/{name}"] = traceback.format_exc()
        results[f"seconds/{name}"] = round(time.perf_counter() - start, 1)
    results["tensorflow_modules"] = _tensorflow_modules()
    np.savez(os.path.join(directory, f"{backend}.npz"), **arrays)
    with open(os.path.join(directory, f"{backend}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        raise SystemExit(f"usage: python -m tests.backends.worker run <directory>; found {sys.argv[1:]}")
    run(sys.argv[2])
