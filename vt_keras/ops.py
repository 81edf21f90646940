"""Small tensor primitives shared by layers, losses and models, written once.

Backend-neutral (`keras.ops` only): they run on TensorFlow, JAX and PyTorch.

- `l2_normalize(x, axis=-1, epsilon=1e-12)`: `x / sqrt(max(|x|², ε))`, the
  convention of `tf.math.l2_normalize`. The ε inside the root keeps an
  all-zero row (padding, an empty NetVLAD cluster) at 0 with a finite
  gradient instead of NaN.
- `l2_normalize_concat(tensors)`: unit norm of the concatenation (YouTube-8M's
  per-frame input normalisation).
- `masked_mean(x, mask, axis=1)`: the mean over the valid positions, zeros
  for a row without any.
- `identity_gather(x, axis=0)`: the `gather` of a single device.
"""
from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """Scales `x` to unit L2 norm along `axis`: `x * rsqrt(max(sum(x²), epsilon))`.

    Args:
        x: a float tensor.
        axis: the axis to normalise.
        epsilon: floor of the squared norm; an all-zero vector stays zero.

    Returns:
        A tensor of `x`'s shape and dtype.

    Example:
    >>> l2_normalize(keras.ops.convert_to_tensor([[3.0, 4.0]]))  # [[0.6, 0.8]]
    """
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squares, ops.cast(epsilon, squares.dtype)))


def l2_normalize_concat(tensors, epsilon=1e-12):
    """Scales each of `tensors` by one over the norm of their concatenation along the last axis.

    The YouTube-8M starter code's input normalisation: each frame's rgb and
    audio vectors together get unit norm.

    Args:
        tensors: float tensors `[..., d_i]` with the same leading shape.
        epsilon: floor of the squared norm (an all-zero frame stays zero).

    Returns:
        The list of scaled tensors.

    Example:
    >>> rgb, audio = l2_normalize_concat([rgb, audio])
    """
    squares = sum(ops.sum(ops.square(t), axis=-1, keepdims=True) for t in tensors)
    inv = ops.rsqrt(ops.maximum(squares, ops.cast(epsilon, squares.dtype)))
    return [t * inv for t in tensors]


def masked_mean(x, mask=None, axis=1):
    """Mean of `x` over `axis`, counting only positions where `mask` is True.

    Computed in float32 (a 300-frame sum in bfloat16 keeps about 3 digits) and
    returned in float32.

    Args:
        x: a float tensor, e.g. frames `[B, T, D]`.
        mask: a boolean tensor of `x`'s shape up to and including `axis`
            (`[B, T]` for `axis=1`), or None for a plain mean.
        axis: the axis to average over.

    Returns:
        `x` without `axis`; a row with no valid position gives zeros.

    Example:
    >>> masked_mean(frames, mask)  # [B, T, D], [B, T] -> [B, D]
    """
    x = ops.cast(x, "float32")
    if mask is None:
        return ops.mean(x, axis=axis)
    weights = ops.cast(mask, "float32")
    while len(weights.shape) < len(x.shape):
        weights = ops.expand_dims(weights, -1)
    total = ops.sum(x * weights, axis=axis)
    count = ops.sum(weights, axis=axis)
    return total / ops.maximum(count, 1.0)


def identity_gather(x, axis=0):
    """The `gather` of a single device: returns `x` unchanged."""
    del axis
    return x
