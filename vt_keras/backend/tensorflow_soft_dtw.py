"""The soft-DTW kernel on TensorFlow: an XLA-compiled anti-diagonal loop with a hand-written backward.

Reached through `vt_keras.backend.soft_dtw_kernel()`; `vt_keras.losses.soft_dtw`
checks the arguments and zeroes the padding first.

Every cell of an anti-diagonal depends only on the two previous
anti-diagonals, so the kernel runs `N + M − 1` steps of a `tf.while_loop`
compiled by XLA, each one vectorised over the cells of an anti-diagonal and
the whole batch.

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
"""
import keras
import tensorflow as tf


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


def _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth):
    """Lengths, band and γ as the kernels take them; pads a one-column cost."""
    dtype = cost.dtype
    shape = tf.shape(cost)

    def lengths(given, full):
        return tf.fill(shape[:1], full) if given is None else tf.cast(given, tf.int32)

    n_len = lengths(row_lengths, shape[1])
    m_len = lengths(col_lengths, shape[2])
    band = tf.cast(shape[1] + shape[2] if bandwidth is None else bandwidth, tf.int32)
    # A Python float must not pass through float32 on its way to float64.
    gamma = tf.cast(gamma, dtype) if tf.is_tensor(gamma) else tf.constant(gamma, dtype)
    # `ragged`: some value is not at the last cell (a Python bool for the trace).
    ragged = row_lengths is not None or col_lengths is not None
    if cost.shape[2] is None or cost.shape[2] == 1:
        # The kernel walks anti-diagonals with stride M − 1: give a one-column
        # cost a padding column, which the column lengths keep out.
        cost = tf.pad(cost, [[0, 0], [0, 0], [0, 1]])
        ragged = True
    return cost, n_len, m_len, gamma, band, ragged


def soft_dtw(cost, row_lengths, col_lengths, gamma, bandwidth):
    """Values `[B]` of a float32/64 cost `[B, N, M]`, differentiable w.r.t. it.

    Args:
        cost: `[B, N, M]`, padding already zeroed.
        row_lengths, col_lengths: int `[B]` in [1, N] and [1, M], or None.
        gamma: γ > 0, a Python float or a scalar tensor.
        bandwidth: Sakoe–Chiba band (int) or None.
    """
    cost, n_len, m_len, gamma, band, ragged = _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth)

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


def soft_dtw_alignment(cost, row_lengths, col_lengths, gamma, bandwidth):
    """`∂ values / ∂ cost`, `[B, N, M]`; arguments as for `soft_dtw`."""
    m = tf.shape(cost)[2]
    cost, n_len, m_len, gamma, band, ragged = _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth)
    _, r_store = _forward_kernel(cost, n_len, m_len, gamma, band, ragged)
    return _backward_kernel(r_store, n_len, m_len, gamma, band, cost)[:, :, :m]
