"""Soft-DTW as a batched anti-diagonal kernel with a hand-written backward.

Soft-DTW (Cuturi & Blondel, "Soft-DTW: a Differentiable Loss Function for
Time-Series", ICML 2017) replaces the min of dynamic time warping by the soft
minimum `softmin_γ(a) = −γ log Σ exp(−a/γ)`. Every cell of an anti-diagonal
depends only on the two previous anti-diagonals, so the kernel runs
`N + M − 1` steps of a `tf.while_loop` compiled by XLA, each one vectorised
over the cells of an anti-diagonal and the whole batch.

The backward pass is not autodiff through the loop (measured at 12 s for 64
pairs of 300 × 300). The forward keeps every `r_{i, j}`; the backward walks the
anti-diagonals in reverse, recomputes each cell's three soft-argmin weights
from its predecessors' `r` exactly as the forward did, and pushes the expected
alignment `E` back with them. The textbook weights `exp((r' − r − δ')/γ)`
recover the soft-min from `r − δ`, which costs an ulp of `r` that `1/γ`
amplifies: at γ = 0.01 in float32 that is a visible gradient error.

Memory: anti-diagonal `t` of a row-major `[N, M]` matrix is the rows
`t, t + (M − 1), t + 2(M − 1), …` of its cells, so the kernel reads costs and
writes `r` and `E` in place in `N·M·B` buffers (see `_cost_view`) and never
builds a skewed `(N + M − 1) × N` copy. Page faults on fresh buffers are a
large part of the cost on CPU; this keeps them to four `N·M·B` buffers.

This file is the only TensorFlow-specific part of the losses package: Keras has
no custom-gradient primitive, and the loop must be one XLA program to be fast.
"""
import keras
import tensorflow as tf

from vt_keras.errors import ConfigError, UserError
from vt_keras.ops import l2_normalize

_METRICS = ("negative_cosine", "squared_euclidean")


# Anti-diagonal `t = i + j` of a row-major `[N, M]` matrix is the cells
# `i·M + j = t + i·(M − 1)`: flat rows `t, t + (M − 1), t + 2(M − 1), …`. Folding
# the `[N·M, B]` cells to `[L, M − 1, B]` makes it the `N` rows from
# `t // (M − 1)` at column `t % (M − 1)`, so every buffer stays at `N·M` cells
# (a skewed copy has `(N + M − 1)·N`) and an anti-diagonal is one slice.


def _rows_needed(n, m):
    return (n + m - 2) // (m - 1) + n


def _cost_view(cost):
    """`[B, N, M]` → `[L, M − 1, B]`: anti-diagonal `t` at stride `(M − 1)·B`."""
    batch, n, m = tf.unstack(tf.shape(cost))
    flat = tf.reshape(tf.transpose(cost, [1, 2, 0]), [n * m, batch])
    rows = _rows_needed(n, m)
    flat = tf.pad(flat, [[0, rows * (m - 1) - n * m], [0, 0]])
    return tf.reshape(flat, [rows, m - 1, batch])


def _read_cost(view, t, n):
    """Anti-diagonal `t` of a `_cost_view`, `[N, B]`; off-grid rows hold other cells."""
    w = tf.shape(view)[1]
    out = tf.slice(view, tf.stack([t // w, t % w, 0]), tf.stack([n, 1, tf.shape(view)[2]]))
    return tf.reshape(out, [n, -1])


def _new_store(n, m, batch, dtype):
    """A `[M − 1, L, B]` buffer: the transposed fold, anti-diagonal `t` contiguous.

    `r` and `E` are written and read once per step; strided `[N, B]` slices
    of a large matrix thrashed the TLB (N = 1000), contiguous ones do not.
    """
    return tf.zeros(tf.stack([m - 1, _rows_needed(n, m), batch]), dtype)


def _read_diag(store, t, n):
    """Anti-diagonal `t` of a `_new_store`, `[N, B]`; off-grid rows hold other cells."""
    w = tf.shape(store)[0]
    out = tf.slice(store, tf.stack([t % w, t // w, 0]), tf.stack([1, n, tf.shape(store)[2]]))
    return tf.reshape(out, [n, -1])


def _write_diag(store, t, n, values, valid):
    """Writes the `valid` cells of anti-diagonal `t`, keeping the cells it aliases."""
    w = tf.shape(store)[0]
    new = tf.where(valid, values, _read_diag(store, t, n))
    return keras.ops.slice_update(store, tf.stack([t % w, t // w, 0]), new[None])


def _store_cells(store, n, m):
    """`[M − 1, L, B]` store → `[N, M, B]` cells."""
    cells = tf.reshape(tf.transpose(store, [1, 0, 2]), tf.stack([-1, tf.shape(store)[2]]))
    return tf.reshape(cells[: n * m], tf.stack([n, m, -1]))


def _shift_down(x, fill):
    """`out[i] = x[i − 1]`, `out[0] = fill`: the predecessor row of each cell."""
    return tf.concat([tf.fill(tf.stack([1, tf.shape(x)[1]]), fill), x[:-1]], axis=0)


def _shift_up(x):
    """`out[i] = x[i + 1]`, zero past the end: the successor row of each cell."""
    return tf.concat([x[1:], tf.zeros_like(x[:1])], axis=0)


def _grid_mask(t, rows, n, m, band):
    """Cells (i, t − i) of anti-diagonal `t` inside the matrix and the band."""
    cols = t - rows
    return (cols >= 0) & (cols < m) & (rows < n) & (tf.abs(rows - cols) <= band)


def _invariants(state):
    # Slices with dynamic starts lose static sizes that XLA still knows.
    return tuple(tf.TensorShape([None] * x.shape.rank) for x in state)


def _softmin_weights(diag, up, left, inv_gamma):
    """`min`, unnormalised soft-argmin weights and their sum for three predecessors."""
    low = tf.minimum(tf.minimum(diag, up), left)
    e_diag = tf.exp((low - diag) * inv_gamma)
    e_up = tf.exp((low - up) * inv_gamma)
    e_left = tf.exp((low - left) * inv_gamma)
    return low, (e_diag, e_up, e_left), e_diag + e_up + e_left


@tf.function(jit_compile=True, autograph=False)
def _forward_kernel(cost, n_len, m_len, gamma, bandwidth, ragged):
    """Values `[B]` and every `r_{i, j}` (in a `_new_store`) for the backward.

    The vectors of the loop are anti-diagonals `[N, B]`, row index first, so
    shifting to a predecessor row moves whole batch rows. `ragged` (a Python
    bool, traced separately) picks each pair's value on its own
    anti-diagonal; otherwise every value is the last cell.
    """
    dtype = cost.dtype
    batch, n, m = tf.unstack(tf.shape(cost))
    steps = n + m - 1
    inf = tf.constant(float("inf"), dtype)
    zero = tf.zeros([], dtype)
    inv_gamma = 1.0 / gamma
    rows = tf.range(n)[:, None]
    deltas = _cost_view(cost)
    last = tf.stack([n_len - 1, tf.range(batch)], axis=1)

    def body(t, r_prev2, r_prev1, values, r_store):
        # r_{0, 0} = 0 is the diagonal predecessor of the first cell only.
        diag = _shift_down(r_prev2, tf.where(t == 0, zero, inf))
        up = _shift_down(r_prev1, inf)
        low, _, total = _softmin_weights(diag, up, r_prev1, inv_gamma)
        r = _read_cost(deltas, t, n) + low - gamma * tf.math.log(total)
        valid = _grid_mask(t, rows, n, m, bandwidth)
        r = tf.where(valid, r, inf)
        if ragged:
            values = tf.where(t == n_len + m_len - 2, tf.gather_nd(r, last), values)
        return t + 1, r_prev1, r, values, _write_diag(r_store, t, n, r, valid)

    boundary = tf.fill(tf.stack([n, batch]), inf)
    init = (tf.constant(0), boundary, boundary, tf.fill([batch], inf), _new_store(n, m, batch, dtype))
    _, _, r_last, values, r_store = tf.while_loop(
        lambda t, *_: t < steps, body, init, shape_invariants=_invariants(init), maximum_iterations=steps
    )
    return (values if ragged else r_last[-1]), r_store


@tf.function(jit_compile=True, autograph=False)
def _backward_kernel(r_store, n_len, m_len, gamma, bandwidth, cost):
    """Expected alignment `E = ∂value/∂cost`, `[B, N, M]`, from the forward's `r`.

    Each cell's soft-argmin weights are recomputed from its predecessors' `r`
    exactly as the forward computed them (never from `r − δ`, which loses
    float32 precision at small γ), and `E` is pushed to the predecessors
    along the anti-diagonals in reverse.
    """
    dtype = r_store.dtype
    # `cost` only lends its static shape: XLA needs N as a compile-time constant.
    batch, n, m = tf.unstack(tf.shape(cost))
    steps = n + m - 1
    inf = tf.constant(float("inf"), dtype)
    zero = tf.zeros([], dtype)
    inv_gamma = 1.0 / gamma
    rows = tf.range(n)[:, None]
    zeros = tf.zeros(tf.stack([n, batch]), dtype)

    def read_r(t):
        valid = _grid_mask(t, rows, n, m, bandwidth) & (t >= 0)
        return tf.where(valid, _read_diag(r_store, tf.maximum(t, 0), n), inf)

    def body(t, e_acc, e_acc_prev, r_prev1, e_store):
        # e_acc: E of anti-diagonal t, complete; e_acc_prev: what t − 1 has
        # received so far (from t + 1 through its diagonal predecessor).
        cols = t - rows
        valid = (cols >= 0) & (tf.abs(rows - cols) <= bandwidth) & (rows < n_len) & (cols < m_len)
        end = valid & (rows == n_len - 1) & (cols == m_len - 1)
        e = tf.where(end, tf.ones_like(e_acc), tf.where(valid, e_acc, zeros))
        e_store = _write_diag(e_store, t, n, e, valid)
        r_prev2 = read_r(t - 2)
        diag = _shift_down(r_prev2, tf.where(t == 0, zero, inf))
        up = _shift_down(r_prev1, inf)
        _, (e_diag, e_up, e_left), total = _softmin_weights(diag, up, r_prev1, inv_gamma)
        scale = tf.where(valid, e / total, zeros)
        # Off-grid cells have inf − inf = NaN weights; keep them out of the sums.
        to_up = tf.where(valid, scale * e_up, zeros)
        to_left = tf.where(valid, scale * e_left, zeros)
        to_diag = tf.where(valid, scale * e_diag, zeros)
        e_acc_prev = e_acc_prev + _shift_up(to_up) + to_left
        return t - 1, e_acc_prev, _shift_up(to_diag), r_prev2, e_store

    init = (steps - 1, zeros, zeros, read_r(steps - 2), _new_store(n, m, batch, dtype))
    *_, e_store = tf.while_loop(
        lambda t, *_: t >= 0, body, init, shape_invariants=_invariants(init), maximum_iterations=steps
    )
    return tf.transpose(_store_cells(e_store, n, m), [2, 0, 1])


def _prepare(cost, gamma, row_lengths, col_lengths, bandwidth):
    """Validates arguments; returns the float32/64 cost and the kernel's inputs."""
    cost = tf.convert_to_tensor(cost)
    if cost.shape.rank != 3:
        raise UserError(f"soft_dtw: cost must have shape [B, N, M], found shape {cost.shape}.")
    if not cost.dtype.is_floating:
        raise UserError(f"soft_dtw: cost must be a float tensor, found dtype {cost.dtype.name}.")
    if 0 in cost.shape[1:]:
        raise UserError(f"soft_dtw: cost must have N, M >= 1, found shape {cost.shape}.")
    if not isinstance(gamma, tf.Tensor) and not float(gamma) > 0.0:
        raise ConfigError(f"soft_dtw: gamma must be > 0, found {gamma}.")
    if bandwidth is not None and (int(bandwidth) != bandwidth or bandwidth < 0):
        raise ConfigError(f"soft_dtw: bandwidth must be a non-negative integer or None, found {bandwidth}.")
    dtype = tf.float64 if cost.dtype == tf.float64 else tf.float32
    cost = tf.cast(cost, dtype)
    shape = tf.shape(cost)

    def lengths(given, full, name):
        if given is None:
            return tf.fill(shape[:1], full)
        given = tf.convert_to_tensor(given)
        if given.shape.rank != 1 or not given.dtype.is_integer:
            raise UserError(f"soft_dtw: {name} must be an integer tensor of shape [B], found {given.dtype.name} {given.shape}.")
        return tf.clip_by_value(tf.cast(given, tf.int32), 1, full)

    n_len = lengths(row_lengths, shape[1], "row_lengths")
    m_len = lengths(col_lengths, shape[2], "col_lengths")
    band = tf.cast(shape[1] + shape[2] if bandwidth is None else bandwidth, tf.int32)
    # A Python float must not pass through float32 on its way to float64.
    gamma = tf.cast(gamma, dtype) if isinstance(gamma, tf.Tensor) else tf.constant(gamma, dtype)
    if row_lengths is not None or col_lengths is not None:
        # Padding may hold anything (NaN from a zero-norm row, say); it must
        # not reach the weights that the backward multiplies.
        inside = (tf.range(shape[1])[None, :, None] < n_len[:, None, None]) & (
            tf.range(shape[2])[None, None, :] < m_len[:, None, None]
        )
        cost = tf.where(inside, cost, tf.zeros_like(cost))
    # `ragged`: some value is not at the last cell (a Python bool for the trace).
    ragged = row_lengths is not None or col_lengths is not None
    if cost.shape[2] is None or cost.shape[2] == 1:
        # The kernel walks anti-diagonals with stride M − 1: give a one-column
        # cost a padding column, which the column lengths keep out.
        cost = tf.pad(cost, [[0, 0], [0, 0], [0, 1]])
        ragged = True
    return cost, gamma, n_len, m_len, band, ragged


def soft_dtw(cost, gamma=1.0, row_lengths=None, col_lengths=None, bandwidth=None):
    """Soft-DTW value of each cost matrix in a batch.

    Call: `soft_dtw(cost [B, N, M]) → [B]` (float32, or float64 for float64
    cost). Differentiable w.r.t. `cost`; the gradient is the expected
    alignment `soft_dtw_alignment(cost)` times the upstream gradient. Runs as
    an XLA-compiled kernel, eagerly, under `tf.function` (with or without
    `jit_compile`) and inside `tf.distribute` replicas; XLA compiles it once
    per input shape and device. Not twice differentiable.

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
    cost, gamma, n_len, m_len, band, ragged = _prepare(cost, gamma, row_lengths, col_lengths, bandwidth)

    @tf.custom_gradient
    def _value(c):
        # stop_gradient: a tape watching the kernel's inputs would make TF
        # export the loop's state across the XLA boundary, which fails.
        c = tf.stop_gradient(c)
        values, r_store = _forward_kernel(c, n_len, m_len, gamma, band, ragged)

        def grad(upstream):
            alignment = _backward_kernel(r_store, n_len, m_len, gamma, band, c)
            return alignment * tf.cast(upstream, alignment.dtype)[:, None, None]

        return values, grad

    return _value(cost)


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
    m = tf.shape(cost)[2]
    cost, gamma, n_len, m_len, band, ragged = _prepare(cost, gamma, row_lengths, col_lengths, bandwidth)
    _, r_store = _forward_kernel(cost, n_len, m_len, gamma, band, ragged)
    return _backward_kernel(r_store, n_len, m_len, gamma, band, cost)[:, :, :m]


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
        raise UserError(f"pairwise_cost: x and y must be [B, N, d] and [B, M, d], found {x.shape} and {y.shape}.")
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
