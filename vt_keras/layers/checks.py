"""Argument and input checks shared by the layers.

A constructor argument out of range raises `vt_keras.errors.ConfigError`; an
input of the wrong shape or structure raises `vt_keras.errors.ShapeError`,
whose message names the layer, the input, what was expected and what was
found, in every layer alike.
"""
from vt_keras.errors import ConfigError, ShapeError


def positive_int(name, value, allow_none=False):
    """Raises `ConfigError` unless `value` is an int ≥ 1 (or None if allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ConfigError(f"{name} must be {expected}; got {value!r}")


def dropout_rate(value):
    """Raises `ConfigError` unless `value` is a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must be a float in [0, 1); got {value!r}")


def shape_error(layer, what, expected, found):
    """The `ShapeError` of `layer` for input `what`: expected this, found that."""
    return ShapeError(f"{layer.name} ({type(layer).__name__}): {what} must be {expected}; found {found}")


def _shape(shape):
    return tuple(shape) if isinstance(shape, (tuple, list)) else shape


def _is_shape(shape):
    return isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape)


def tensor_shape(layer, shape, what, ranks, known_features=True):
    """Checks one input shape: its rank is in `ranks` and (optionally) its last axis is known.

    Returns the shape as a tuple.
    """
    expected = " or ".join({2: "[batch, features]", 3: "[batch, time, features]"}.get(r, f"rank {r}")
                           for r in ranks)
    if known_features:
        expected += " with a known feature size"
    if not _is_shape(shape) or len(shape) not in ranks or (known_features and shape[-1] is None):
        found = f"shape {_shape(shape)}" if _is_shape(shape) else f"{_shape(shape)!r}"
        raise shape_error(layer, what, expected, found)
    return tuple(shape)


def frames_shape(layer, shape, what="inputs", known_features=True):
    """Checks a frame sequence `[batch, time, features]`; returns its shape."""
    return tensor_shape(layer, shape, what, (3,), known_features)


def pair(layer, value, what):
    """`value` as `(video, audio)`; None gives `(None, None)`."""
    if value is None:
        return None, None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        if isinstance(value, (tuple, list)):
            found = f"a sequence of {len(value)}"
        elif hasattr(value, "shape"):
            found = f"one tensor of shape {tuple(value.shape)}"
        else:
            found = type(value).__name__
        raise shape_error(layer, what, "a (video, audio) pair", found)
    return value[0], value[1]


def pair_of_shapes(layer, input_shape, what="inputs"):
    """`(video_shape, audio_shape)` of a two-modality input shape."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 2 or not all(
            _is_shape(s) for s in input_shape):
        raise shape_error(layer, what, "a (video, audio) pair of tensors", f"shape {_shape(input_shape)}")
    return tuple(input_shape[0]), tuple(input_shape[1])


def same_time_axis(layer, video_shape, audio_shape):
    """Raises `ShapeError` when the two modalities' static time lengths differ."""
    steps = video_shape[1], audio_shape[1]
    if None not in steps and steps[0] != steps[1]:
        raise shape_error(layer, "inputs", "video and audio on one time axis (the same T)",
                          f"{steps[0]} video and {steps[1]} audio frames")
