"""Masked pooling of frame features over time."""
import keras
from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.layers import checks
from vt_keras.ops import masked_mean  # noqa: F401  (also importable from here)

_MODES = ("mean", "max", "mean_max")


def masked_max(inputs, mask=None):
    """Max over axis 1 of `[B, T, D]` over valid frames; zeros for an all-padded row."""
    if mask is None:
        return ops.max(inputs, axis=1)
    valid = ops.cast(mask, "bool")[..., None]
    # The dtype's lowest finite value, not -inf: -inf * 0 would give NaN later.
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    lowest = ops.cast(-6.0e4 if dtype == "float16" else -3.0e38, dtype)
    pooled = ops.max(ops.where(valid, inputs, lowest), axis=1)
    any_valid = ops.any(valid, axis=1)
    return ops.where(any_valid, pooled, ops.zeros_like(pooled))


@keras.saving.register_keras_serializable(package="vt_keras")
class FramePooling(keras.layers.Layer):
    """Pools frame features over time, ignoring padded frames.

    `mode="mean"` averages the valid frames, `"max"` takes their per-feature
    maximum, `"mean_max"` concatenates both (`[mean, max]`). A video whose
    frames are all padded pools to zeros, not NaN. The time axis is gone, so
    the output carries no mask.

    Args:
        mode: one of "mean", "max", "mean_max".
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor `[B, T, D]`.
        mask: optional bool `[B, T]`, True for real frames.

    Returns:
        `[B, D]` (`[B, 2D]` for "mean_max") in the layer's compute dtype.

    Example:
        >>> pool = FramePooling("mean_max")
        >>> x = keras.random.normal((2, 300, 1024))
        >>> mask = keras.ops.arange(300)[None, :] < keras.ops.array([[120], [300]])
        >>> pool(x, mask=mask).shape
        (2, 2048)

    Reference: the frame-level "average/max pooling" baselines of the
    YouTube-8M paper (Abu-El-Haija et al. 2016).
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ConfigError(f"FramePooling mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.supports_masking = True

    def build(self, input_shape):
        checks.frames_shape(self, input_shape, known_features=False)

    def call(self, inputs, mask=None):
        parts = []
        if self.mode in ("mean", "mean_max"):
            parts.append(ops.cast(masked_mean(inputs, mask), self.compute_dtype))
        if self.mode in ("max", "mean_max"):
            parts.append(ops.cast(masked_max(inputs, mask), self.compute_dtype))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        dim = input_shape[-1]
        if self.mode == "mean_max" and dim is not None:
            dim = 2 * dim
        return (input_shape[0], dim)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
