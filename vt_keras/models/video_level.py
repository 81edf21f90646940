"""Video-level YouTube-8M classifiers: the starter code's `LogisticModel` and `MoeModel`, from `config.model`.

Video-level records hold one vector per feature and video (`mean_rgb`
1024, `mean_audio` 128: the means of the video's dequantized frames). The
model concatenates them in `data.features` order and classifies the
concatenation with the head `model.head` names, built from the section of
that name:

- `logistic`: `logistic(num_classes, **model.logistic)`, one dense layer
  with a sigmoid per class (the starter code's `LogisticModel`);
- `moe`: `MixtureOfExperts(num_classes, **model.moe)` (the starter code's
  `MoeModel`: per class a softmax gate over `num_mixtures + 1` experts, the
  last a dummy that always says 0, and sigmoid experts).

L2 penalties. The starter code regularises with TF1's
`l2_regularizer(scale)`, whose loss is `scale · Σw² / 2`; Keras' `L2(l2)`
adds `l2 · Σw²`. So the starter code's `l2_penalty=1e-8` is
`l2_penalty=5e-9` here (configs/yt8m/video_*.py), and the tests check the
added loss against `1e-8 · Σw² / 2`. Only kernels are penalised, as there.

Reference: Abu-El-Haija et al., "YouTube-8M: A Large-Scale Video
Classification Benchmark", 2016, and its starter code
(`video_level_models.py`).
"""
import keras

from vt_keras.errors import ConfigError
from vt_keras.layers.heads import MixtureOfExperts
from vt_keras.registry import Registry

HEADS = Registry("video-level head")
FEATURES_LAYER = "features"


@HEADS.register("logistic")
def logistic(num_classes, l2_penalty, name="logistic"):
    """The starter code's `LogisticModel` head: `σ(W x + b)` per class, `l2_penalty · Σ W²` added to the loss.

    Args:
        num_classes: output classes C.
        l2_penalty: Keras' L2 factor of the kernel (5e-9 is the starter
            code's 1e-8; see the module docstring).
        name: the name of the dense layer.

    Returns:
        A function of `x [B, D]` giving float32 probabilities `[B, C]` (the
        sigmoid is taken in float32 under mixed precision).

    Example:
        >>> probs = logistic(3862)(keras.Input((1152,)))
    """
    if float(l2_penalty) < 0:
        raise ConfigError(f"model.logistic.l2_penalty={l2_penalty}: expected >= 0")
    regularizer = keras.regularizers.L2(float(l2_penalty)) if l2_penalty else None
    dense = keras.layers.Dense(int(num_classes), kernel_regularizer=regularizer, name=name)
    sigmoid = keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")
    return lambda x: sigmoid(dense(x))


@HEADS.register("moe")
def moe(num_classes, name="moe", **kwargs):
    """The starter code's `MoeModel` head: `MixtureOfExperts(num_classes, **kwargs)`."""
    return MixtureOfExperts(num_classes, **kwargs, name=name)


def build_video_level_classifier(model_cfg, features, num_classes):
    """Builds the video-level classifier of `config.model`.

    Args:
        model_cfg: `config.model` of configs/yt8m/video_logistic.py or
            video_moe.py: `head` ("logistic" | "moe") and the section of that
            name (the head's arguments).
        features: `(name, dim)` pairs of the video-level features, in the
            order they are concatenated.
        num_classes: output classes C.

    Returns:
        A `keras.Model` taking `{name: float [B, dim]}` and returning float32
        probabilities `[B, C]`.

    Example:
        >>> config = load_config_file("configs/yt8m/video_moe.py")
        >>> model = build_video_level_classifier(config.model, (("mean_rgb", 1024), ("mean_audio", 128)), 3862)
    """
    head = model_cfg["head"]
    make_head = HEADS.get(head, key="model.head")
    if head not in model_cfg:
        raise ConfigError(f"model.{head} is missing for model.head={head!r}; expected the head's arguments "
                          f"(configs/yt8m/video_{head}.py has them)")
    if not features:
        raise ConfigError("data.features is empty; expected the video-level features, e.g. "
                          "(('mean_rgb', 1024), ('mean_audio', 128))")
    inputs = {name: keras.Input((int(dim),), name=name) for name, dim in features}
    values = [inputs[name] for name, _ in features]
    x = values[0] if len(values) == 1 else keras.layers.Concatenate(axis=-1, name=FEATURES_LAYER)(values)
    probs = make_head(num_classes, **dict(model_cfg[head]))(x)
    return keras.Model(inputs, probs, name=f"video_{head}")
