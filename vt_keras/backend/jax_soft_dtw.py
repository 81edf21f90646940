"""The soft-DTW kernel on JAX: an anti-diagonal `lax.fori_loop` under `jit`, with a custom VJP.

Reached through `vt_keras.backend.soft_dtw_kernel()`; `vt_keras.losses.soft_dtw`
checks the arguments and zeroes the padding first. The algorithm and the
memory layout are those of the TensorFlow kernel (`tensorflow_soft_dtw`),
written with `lax`: `N + M − 1` steps, each vectorised over the cells of an
anti-diagonal (`[N, B]`, row index first) and the batch; the forward keeps
every `r`; the backward walks the anti-diagonals in reverse, recomputes each
cell's three soft-argmin weights from its predecessors' `r` exactly as the
forward did (never from `r − δ`, which loses float32 precision at small γ)
and pushes the expected alignment `E` back with them.

Anti-diagonal `t` of a row-major `[N, M]` matrix is the flat cells
`t, t + (M − 1), t + 2(M − 1), …`: folded to `[L, M − 1, B]` it is one slice,
so the cost is read in place and `r` and `E` live in `N·M·B`-sized buffers
rather than a skewed `(N + M − 1)·N·B` copy (a skewed layout measured about
twice the CPU time here). XLA compiles each direction once per shape.

Float64 needs `jax.config.update("jax_enable_x64", True)`; otherwise JAX
computes in float32.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax


def _rows_needed(n, m):
    return (n + m - 2) // (m - 1) + n


def _cost_view(cost):
    """`[B, N, M]` → `[L, M − 1, B]`: anti-diagonal `t` at stride `(M − 1)·B`."""
    batch, n, m = cost.shape
    flat = jnp.transpose(cost, (1, 2, 0)).reshape(n * m, batch)
    rows = _rows_needed(n, m)
    flat = jnp.pad(flat, ((0, rows * (m - 1) - n * m), (0, 0)))
    return flat.reshape(rows, m - 1, batch)


def _read_cost(view, t, n):
    """Anti-diagonal `t` of a `_cost_view`, `[N, B]`; off-grid rows hold other cells."""
    w = view.shape[1]
    return lax.dynamic_slice(view, (t // w, t % w, 0), (n, 1, view.shape[2]))[:, 0]


def _new_store(n, m, batch, dtype, fill=0.0):
    """A `[M − 1, L, B]` buffer: the transposed fold, anti-diagonal `t` contiguous."""
    return jnp.full((m - 1, _rows_needed(n, m), batch), fill, dtype)


def _read_diag(store, t, n):
    """Anti-diagonal `t` of a `_new_store`, `[N, B]`; off-grid rows hold other cells."""
    w = store.shape[0]
    return lax.dynamic_slice(store, (t % w, t // w, 0), (1, n, store.shape[2]))[0]


def _write_diag(store, t, n, values, valid):
    """Writes the `valid` cells of anti-diagonal `t`, keeping the cells it aliases."""
    w = store.shape[0]
    new = jnp.where(valid, values, _read_diag(store, t, n))
    return lax.dynamic_update_slice(store, new[None], (t % w, t // w, 0))


def _store_cells(store, n, m):
    """`[M − 1, L, B]` store → `[B, N, M]` cells."""
    cells = jnp.transpose(store, (1, 0, 2)).reshape(-1, store.shape[2])
    return jnp.transpose(cells[: n * m].reshape(n, m, -1), (2, 0, 1))


def _shift_down(x, fill):
    """`out[i] = x[i − 1]`, `out[0] = fill`: the predecessor row of each cell."""
    return jnp.concatenate([jnp.full_like(x[:1], fill), x[:-1]], axis=0)


def _shift_up(x):
    """`out[i] = x[i + 1]`, zero past the end: the successor row of each cell."""
    return jnp.concatenate([x[1:], jnp.zeros_like(x[:1])], axis=0)


def _grid_mask(t, rows, n, m, band):
    """Cells (i, t − i) of anti-diagonal `t` inside the matrix and the band."""
    cols = t - rows
    return (cols >= 0) & (cols < m) & (rows < n) & (jnp.abs(rows - cols) <= band)


def _softmin_weights(diag, up, left, inv_gamma):
    """`min`, unnormalised soft-argmin weights and their sum for three predecessors."""
    low = jnp.minimum(jnp.minimum(diag, up), left)
    e_diag = jnp.exp((low - diag) * inv_gamma)
    e_up = jnp.exp((low - up) * inv_gamma)
    e_left = jnp.exp((low - left) * inv_gamma)
    return low, (e_diag, e_up, e_left), e_diag + e_up + e_left


@functools.partial(jax.jit, static_argnames=("band",))
def _forward(cost, n_len, m_len, gamma, band):
    """Values `[B]` and every `r_{i, j}` (in a `_new_store`) for the backward."""
    batch, n, m = cost.shape
    dtype = cost.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    inv_gamma = 1.0 / gamma
    rows = jnp.arange(n)[:, None]
    deltas = _cost_view(cost)

    def body(t, state):
        r_prev2, r_prev1, r_store = state
        # r_{0, 0} = 0 is the diagonal predecessor of the first cell only.
        diag = _shift_down(r_prev2, jnp.where(t == 0, 0.0, inf).astype(dtype))
        up = _shift_down(r_prev1, inf)
        low, _, total = _softmin_weights(diag, up, r_prev1, inv_gamma)
        valid = _grid_mask(t, rows, n, m, band)
        r = jnp.where(valid, _read_cost(deltas, t, n) + low - gamma * jnp.log(total), inf)
        return r_prev1, r, _write_diag(r_store, t, n, r, valid)

    boundary = jnp.full((n, batch), jnp.inf, dtype)
    # Cells outside the band are never written: +inf, the value of a pair without a path.
    r_store = _new_store(n, m, batch, dtype, fill=jnp.inf)
    _, _, r_store = lax.fori_loop(0, n + m - 1, body, (boundary, boundary, r_store))
    # Pair b's value is cell (n_b − 1, m_b − 1): anti-diagonal t, row n_b − 1.
    t = n_len + m_len - 2
    w = m - 1
    values = r_store[t % w, t // w + n_len - 1, jnp.arange(batch)]
    return values, r_store


@functools.partial(jax.jit, static_argnames=("band", "n", "m"))
def _backward(r_store, n_len, m_len, gamma, band, n, m):
    """Expected alignment `E = ∂value/∂cost`, `[B, N, M]`, from the forward's `r`."""
    batch = r_store.shape[2]
    dtype = r_store.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    inv_gamma = 1.0 / gamma
    rows = jnp.arange(n)[:, None]
    zeros = jnp.zeros((n, batch), dtype)
    steps = n + m - 1

    def read_r(t):
        valid = _grid_mask(t, rows, n, m, band) & (t >= 0)
        return jnp.where(valid, _read_diag(r_store, jnp.maximum(t, 0), n), inf)

    def body(k, state):
        # e_acc: E of anti-diagonal t, complete; e_acc_prev: what t − 1 has
        # received so far (from t + 1 through its diagonal predecessor).
        e_acc, e_acc_prev, r_prev1, e_store = state
        t = steps - 1 - k
        cols = t - rows
        valid = (cols >= 0) & (jnp.abs(rows - cols) <= band) & (rows < n_len) & (cols < m_len)
        end = valid & (rows == n_len - 1) & (cols == m_len - 1)
        e = jnp.where(end, 1.0, jnp.where(valid, e_acc, 0.0)).astype(dtype)
        e_store = _write_diag(e_store, t, n, e, valid)
        r_prev2 = read_r(t - 2)
        diag = _shift_down(r_prev2, jnp.where(t == 0, 0.0, inf).astype(dtype))
        up = _shift_down(r_prev1, inf)
        _, (e_diag, e_up, e_left), total = _softmin_weights(diag, up, r_prev1, inv_gamma)
        scale = jnp.where(valid, e / total, 0.0)
        # Off-grid cells have inf − inf = NaN weights; keep them out of the sums.
        to_up, to_left, to_diag = (jnp.where(valid, scale * x, 0.0) for x in (e_up, e_left, e_diag))
        return e_acc_prev + _shift_up(to_up) + to_left, _shift_up(to_diag), r_prev2, e_store

    state = (zeros, zeros, read_r(steps - 2), _new_store(n, m, batch, dtype))
    *_, e_store = lax.fori_loop(0, steps, body, state)
    return _store_cells(e_store, n, m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _soft_dtw(cost, n_len, m_len, gamma, band):
    return _forward(cost, n_len, m_len, gamma, band)[0]


def _soft_dtw_fwd(cost, n_len, m_len, gamma, band):
    values, r_store = _forward(cost, n_len, m_len, gamma, band)
    return values, (r_store, n_len, m_len, gamma, cost.shape[1], cost.shape[2])


def _soft_dtw_bwd(band, residuals, upstream):
    r_store, n_len, m_len, gamma, n, m = residuals
    alignment = _backward(r_store, n_len, m_len, gamma, band, n, m)
    # Lengths and γ get no gradient.
    return alignment * upstream[:, None, None].astype(alignment.dtype), None, None, None


_soft_dtw.defvjp(_soft_dtw_fwd, _soft_dtw_bwd)


def _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth):
    """Lengths, γ and band as the kernels take them; pads a one-column cost."""
    batch, n, m = cost.shape

    def lengths(given, full):
        return jnp.full((batch,), full, jnp.int32) if given is None else jnp.asarray(given, jnp.int32)

    n_len, m_len = lengths(row_lengths, n), lengths(col_lengths, m)
    band = n + m if bandwidth is None else int(bandwidth)
    if m == 1:
        # The fold has stride M − 1: give a one-column cost a padding column,
        # which the column lengths (all 1) keep out.
        cost = jnp.pad(cost, ((0, 0), (0, 0), (0, 1)))
    return cost, n_len, m_len, jnp.asarray(gamma, cost.dtype), band


def soft_dtw(cost, row_lengths, col_lengths, gamma, bandwidth):
    """Values `[B]` of a float32/64 cost `[B, N, M]`, differentiable w.r.t. it.

    Args:
        cost: `[B, N, M]`, padding already zeroed.
        row_lengths, col_lengths: int `[B]` in [1, N] and [1, M], or None.
        gamma: γ > 0, a Python float or a scalar array.
        bandwidth: Sakoe–Chiba band (int) or None.
    """
    # A one-column cost comes back padded; autodiff of the pad drops its gradient.
    cost, n_len, m_len, gamma, band = _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth)
    return _soft_dtw(cost, n_len, m_len, gamma, band)


def soft_dtw_alignment(cost, row_lengths, col_lengths, gamma, bandwidth):
    """`∂ values / ∂ cost`, `[B, N, M]`; arguments as for `soft_dtw`."""
    m = cost.shape[2]
    cost, n_len, m_len, gamma, band = _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth)
    _, r_store = _forward(cost, n_len, m_len, gamma, band)
    return _backward(r_store, n_len, m_len, gamma, band, cost.shape[1], cost.shape[2])[:, :, :m]
