"""Soft-DTW, its expected alignment and divergence, on every Keras backend.

Soft-DTW (Cuturi & Blondel, "Soft-DTW: a Differentiable Loss Function for
Time-Series", ICML 2017) replaces the min of dynamic time warping by the soft
minimum `softmin_γ(a) = −γ log Σ exp(−a/γ)`:
`r_{i, j} = δ_{i, j} + softmin_γ(r_{i−1, j−1}, r_{i−1, j}, r_{i, j−1})`.

This module checks the arguments and hands the recursion to the running
backend's kernel (`vt_keras.backend.soft_dtw_kernel()`): an anti-diagonal
loop, vectorised over the cells of an anti-diagonal and the batch, with a
hand-written backward that recomputes each cell's soft-argmin weights from the
forward's `r` (XLA on TensorFlow and JAX, an `autograd.Function` on PyTorch).
Autodiff through the loop is far slower, and the textbook backward weights
`exp((r' − r − δ')/γ)` lose float32 precision at small γ.
"""
import keras
from keras import ops

from vt_keras.backend import soft_dtw_kernel
from vt_keras.errors import ConfigError, ShapeError
from vt_keras.ops import l2_normalize

_METRICS = ("negative_cosine", "squared_euclidean")


def _prepare(cost, gamma, row_lengths, col_lengths, bandwidth):
    """Validates arguments; returns the float32/64 cost (padding zeroed) and the lengths."""
    cost = ops.convert_to_tensor(cost)
    if len(cost.shape) != 3:
        raise ShapeError(f"soft_dtw: cost must have shape [B, N, M], found shape {tuple(cost.shape)}.")
    dtype = keras.backend.standardize_dtype(cost.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise ShapeError(f"soft_dtw: cost must be a float tensor, found dtype {dtype}.")
    if 0 in cost.shape[1:]:
        raise ShapeError(f"soft_dtw: cost must have N, M >= 1, found shape {tuple(cost.shape)}.")
    if not ops.is_tensor(gamma) and not float(gamma) > 0.0:
        raise ConfigError(f"soft_dtw: gamma must be > 0, found {gamma}.")
    if bandwidth is not None and (int(bandwidth) != bandwidth or bandwidth < 0):
        raise ConfigError(f"soft_dtw: bandwidth must be a non-negative integer or None, found {bandwidth}.")
    cost = ops.cast(cost, "float64" if dtype == "float64" else "float32")
    shape = ops.shape(cost)

    def lengths(given, full, name):
        if given is None:
            return None
        given = ops.convert_to_tensor(given)
        kind = keras.backend.standardize_dtype(given.dtype)
        if len(given.shape) != 1 or "int" not in kind:
            raise ShapeError(f"soft_dtw: {name} must be an integer tensor of shape [B], found {kind} "
                             f"{tuple(given.shape)}.")
        return ops.clip(ops.cast(given, "int32"), 1, full)

    n_len = lengths(row_lengths, shape[1], "row_lengths")
    m_len = lengths(col_lengths, shape[2], "col_lengths")
    if n_len is not None or m_len is not None:
        # Padding may hold anything (NaN from a zero-norm row, say); it must
        # not reach the weights that the backward multiplies.
        inside = ops.ones_like(cost, dtype="bool")
        if n_len is not None:
            inside = inside & (ops.arange(shape[1], dtype="int32")[None, :, None] < n_len[:, None, None])
        if m_len is not None:
            inside = inside & (ops.arange(shape[2], dtype="int32")[None, None, :] < m_len[:, None, None])
        cost = ops.where(inside, cost, ops.zeros_like(cost))
    return cost, n_len, m_len, None if bandwidth is None else int(bandwidth)


def soft_dtw(cost, gamma=1.0, row_lengths=None, col_lengths=None, bandwidth=None):
    """Soft-DTW value of each cost matrix in a batch.

    Call: `soft_dtw(cost [B, N, M]) → [B]` (float32, or float64 for float64
    cost). Differentiable w.r.t. `cost`; the gradient is the expected
    alignment `soft_dtw_alignment(cost)` times the upstream gradient. On
    TensorFlow it runs as an XLA-compiled kernel, eagerly, under
    `tf.function` (with or without `jit_compile`) and inside `tf.distribute`
    replicas; on JAX eagerly and under `jit` and `grad`; on
    PyTorch eagerly with autograd. TensorFlow and JAX compile it once per
    input shape. Not twice differentiable.

    Args:
        cost: `[B, N, M]` pairwise costs δ(x_i, y_j); negative values allowed.
        gamma: soft-min temperature γ > 0; γ → 0 gives DTW.
        row_lengths: optional `[B]` int, valid rows of each pair (a prefix),
            clamped to [1, N]. A padded pair's value equals that of its
            valid sub-matrix, and its gradient is zero on the padding.
        col_lengths: optional `[B]` int, valid columns of each pair.
        bandwidth: optional Sakoe–Chiba band: cells with `|i − j| > bandwidth`
            are +inf. A pair with `|n − m| > bandwidth` has no path: its
            value is +inf and its gradient zero.

    Returns:
        `[B]` soft-DTW values `r_{n, m}`.

    Example:
        >>> cost = pairwise_cost(x, y, metric="squared_euclidean")
        >>> values = soft_dtw(cost, gamma=0.1)  # [B]

    Implements Cuturi & Blondel (2017), "Soft-DTW: a Differentiable Loss
    Function for Time-Series".
    """
    cost, n_len, m_len, band = _prepare(cost, gamma, row_lengths, col_lengths, bandwidth)
    return soft_dtw_kernel().soft_dtw(cost, n_len, m_len, gamma, band)


def soft_dtw_alignment(cost, gamma=1.0, row_lengths=None, col_lengths=None, bandwidth=None):
    """Expected alignment matrix `E = ∂ soft_dtw(cost) / ∂ cost`, for plots.

    Call: `soft_dtw_alignment(cost [B, N, M]) → [B, N, M]`. Entries lie in
    [0, 1]; the corners (0, 0) and (n − 1, m − 1) are 1; padding is 0.
    Arguments as for `soft_dtw`.

    Example:
        >>> e = soft_dtw_alignment(pairwise_cost(x, y), gamma=0.1)
        >>> plt.imshow(e[0])

    Implements Cuturi & Blondel (2017), Algorithm 2.
    """
    cost, n_len, m_len, band = _prepare(cost, gamma, row_lengths, col_lengths, bandwidth)
    return soft_dtw_kernel().soft_dtw_alignment(cost, n_len, m_len, gamma, band)


def pairwise_cost(x, y, metric="negative_cosine"):
    """Pairwise cost matrices between the rows of two batches of sequences.

    Call: `pairwise_cost(x [B, N, d], y [B, M, d]) → [B, N, M]`.

    Args:
        x: `[B, N, d]` first sequences.
        y: `[B, M, d]` second sequences.
        metric: `"negative_cosine"`, `−cos(x_i, y_j)` in [−1, 1] (VT-TWINS'
            shifted cosine distance), or `"squared_euclidean"`, `‖x_i − y_j‖²`.

    Example:
        >>> cost = pairwise_cost(video, text)  # [B, N, M]

    Used by soft-DTW (Cuturi & Blondel 2017) and VT-TWINS (Ko et al. 2022).
    """
    if metric not in _METRICS:
        raise ConfigError(f"pairwise_cost: metric must be one of {_METRICS}, found {metric!r}.")
    x = keras.ops.convert_to_tensor(x)
    y = keras.ops.convert_to_tensor(y)
    if len(x.shape) != 3 or len(y.shape) != 3 or x.shape[-1] != y.shape[-1]:
        raise ShapeError(f"pairwise_cost: x and y must be [B, N, d] and [B, M, d], found {x.shape} and {y.shape}.")
    if metric == "negative_cosine":
        return -keras.ops.matmul(l2_normalize(x), keras.ops.swapaxes(l2_normalize(y), 1, 2))
    x_sq = keras.ops.sum(keras.ops.square(x), axis=-1)[:, :, None]
    y_sq = keras.ops.sum(keras.ops.square(y), axis=-1)[:, None, :]
    cross = keras.ops.matmul(x, keras.ops.swapaxes(y, 1, 2))
    return keras.ops.maximum(x_sq + y_sq - 2.0 * cross, 0.0)


def soft_dtw_divergence(x, y, gamma=1.0, metric="squared_euclidean", x_lengths=None, y_lengths=None):
    """Soft-DTW divergence `D(x, y) = sdtw(x, y) − ½ (sdtw(x, x) + sdtw(y, y))`.

    Call: `soft_dtw_divergence(x [B, N, d], y [B, M, d]) → [B]`. Zero for
    `x = y`, and non-negative for the squared Euclidean cost.

    Args:
        x: `[B, N, d]` first sequences.
        y: `[B, M, d]` second sequences.
        gamma: soft-min temperature γ > 0.
        metric: cost between rows, see `pairwise_cost`.
        x_lengths: optional `[B]` valid lengths of `x`.
        y_lengths: optional `[B]` valid lengths of `y`.

    Example:
        >>> d = soft_dtw_divergence(pred, target, gamma=0.1)  # [B]

    Implements Blondel, Mensch & Vert (2021), "Differentiable Divergences
    Between Time Series".
    """
    xy = soft_dtw(pairwise_cost(x, y, metric), gamma, x_lengths, y_lengths)
    xx = soft_dtw(pairwise_cost(x, x, metric), gamma, x_lengths, x_lengths)
    yy = soft_dtw(pairwise_cost(y, y, metric), gamma, y_lengths, y_lengths)
    return xy - 0.5 * (xx + yy)
