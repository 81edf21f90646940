"""YouTube-8M's 8-bit feature codes: `quantize` (as the feature extractor) and `dequantize` (as the readers).

The released frame-level features store each float as one uint8 code over
the range [-2, 2]:

    dequantize: x = q * 4/255 + 4/512 - 2      (q = 0 -> -1.9921875, q = 255 -> 2.0078125)
    quantize:   q = round((clip(x, -2, 2) + 2) * 255 / 4)

`quantize(dequantize(q)) == q` for every code, and a float in [-2, 2] comes
back from `dequantize(quantize(x))` within one step (4/255) of itself (the
half-step offset of `dequantize` plus rounding).

Example:
    >>> dequantize(np.array([0, 255], np.uint8))
    array([-1.9921875,  2.0078125], dtype=float32)
"""
import numpy as np
import tensorflow as tf

from vt_keras.ops import l2_normalize_concat

__all__ = ["dequantize", "dequantize_frames", "quantize"]


def dequantize(q, max_quantized_value=2.0, min_quantized_value=-2.0):
    """Maps uint8 codes to floats as the YouTube-8M starter code does.

    `x = q * range / 255 + range / 512 + min`, so with the defaults q = 0 gives
    -1.9921875 and q = 255 gives 2.0078125.

    Args:
        q: codes, a numpy array or a tensor (uint8 or any integer/float dtype).
        max_quantized_value, min_quantized_value: the range the codes span.

    Returns:
        float32 values of `q`'s shape: numpy in, numpy out; tensors in, tensor out.
    """
    span = max_quantized_value - min_quantized_value
    scale, bias = span / 255.0, span / 512.0 + min_quantized_value
    if isinstance(q, (tf.Tensor, tf.Variable)):
        if q.dtype == tf.uint8:
            # TensorFlow's Dequantize computes `min + q · (max − min) / 255` in
            # one pass over the codes (the three-op form made three) and gives
            # the same float32 values.
            return tf.quantization.dequantize(tf.bitcast(q, tf.quint8), bias, bias + span, mode="MIN_COMBINED")
        return tf.cast(q, tf.float32) * scale + bias
    return (np.asarray(q, np.float32) * np.float32(scale) + np.float32(bias)).astype(np.float32)


def dequantize_frames(codes, mask, l2_normalize=False):
    """Frames as the float32 readers give them, from uint8 codes and the frame mask: the model's first step.

    `frame_dataset(..., dtype="uint8")` leaves the frames as codes (padded
    with code 0); this dequantizes them, zeroes the frames the mask marks as
    padding, and optionally L2-normalises each frame's concatenated features
    (the starter code's input normalisation): the same float32 values, bit
    for bit, as `frame_dataset(..., dtype="float32", l2_normalize=...)`. Run
    inside the training step it executes on the accelerator (and fuses into
    one kernel under XLA).

    Args:
        codes: uint8 tensors `[B, T, dim_i]`, one per feature.
        mask: bool `[B, T]`, True for real frames.
        l2_normalize: normalise the concatenation of all features per frame.

    Returns:
        The list of float32 tensors `[B, T, dim_i]`.

    Example:
        >>> rgb, audio = dequantize_frames([batch["rgb"], batch["audio"]], batch["mask"])
    """
    mask = tf.cast(mask, tf.bool)[:, :, None]
    values = [tf.where(mask, dequantize(q), 0.0) for q in codes]
    return l2_normalize_concat(values) if l2_normalize else values


def quantize(x, max_quantized_value=2.0, min_quantized_value=-2.0):
    """Maps floats to uint8 codes: `round((clip(x, min, max) - min) * 255 / range)`.

    The inverse of `dequantize` on its outputs: `quantize(dequantize(q)) == q`.

    Args:
        x: floats, a numpy array or a tensor.
        max_quantized_value, min_quantized_value: the range; values outside are clipped.

    Returns:
        uint8 codes of `x`'s shape: numpy in, numpy out; tensors in, tensor out.
    """
    span = max_quantized_value - min_quantized_value
    if isinstance(x, (tf.Tensor, tf.Variable)):
        x = tf.clip_by_value(tf.cast(x, tf.float32), min_quantized_value, max_quantized_value)
        return tf.cast(tf.round((x - min_quantized_value) * (255.0 / span)), tf.uint8)
    # In place on one float32 copy: this runs over every frame the writers write.
    x = np.array(x, np.float32)
    np.clip(x, min_quantized_value, max_quantized_value, out=x)
    x -= np.float32(min_quantized_value)
    x *= np.float32(255.0 / span)
    return np.rint(x, out=x).astype(np.uint8)
