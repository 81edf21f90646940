"""The soft-DTW kernel on PyTorch: a vectorised anti-diagonal loop in an `autograd.Function`.

Reached through `vt_keras.backend.soft_dtw_kernel()`; `vt_keras.losses.soft_dtw`
checks the arguments and zeroes the padding first. The algorithm and the
memory layout are those of the TensorFlow kernel (`tensorflow_soft_dtw`): a
Python loop of `N + M − 1` steps, each a handful of tensor operations on one
anti-diagonal of every pair (`[N, B]`, row index first); the forward keeps
every `r`, and the backward (`backward` of the `autograd.Function`) walks the
anti-diagonals in reverse, recomputes each cell's three soft-argmin weights
from its predecessors' `r` exactly as the forward did (never from `r − δ`,
which loses float32 precision at small γ) and pushes the expected alignment
`E` back with them.

Anti-diagonal `t` of a row-major `[N, M]` matrix is the flat cells
`t, t + (M − 1), t + 2(M − 1), …`: folded to `[L, M − 1, B]` it is one
strided view, so the cost is read in place; `r` and `E` live in the
transposed fold `[M − 1, L, B]`, where each anti-diagonal is contiguous.
"""
import contextlib

import torch


@contextlib.contextmanager
def _one_thread():
    """Runs the loops on one intra-op thread, then restores the setting.

    Each step works on one anti-diagonal, `N × B` cells (19,200 for 64 pairs of
    300 × 300): too little for intra-op threads, whose hand-over cost more
    than the operation itself (an `exp` took 13.7 ms with two threads against
    9 µs with one on a busy two-core machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rows_needed(n, m):
    return (n + m - 2) // (m - 1) + n


def _cost_view(cost):
    """`[B, N, M]` → `[L, M − 1, B]`: anti-diagonal `t` is rows `t // (M − 1)…` at column `t % (M − 1)`."""
    batch, n, m = cost.shape
    flat = cost.permute(1, 2, 0).reshape(n * m, batch)
    rows = _rows_needed(n, m)
    flat = torch.nn.functional.pad(flat, (0, 0, 0, rows * (m - 1) - n * m))
    return flat.reshape(rows, m - 1, batch)


def _read_cost(view, t, n):
    """Anti-diagonal `t` of a `_cost_view`, `[N, B]` (a strided view); off-grid rows hold other cells."""
    w = view.shape[1]
    return view[t // w: t // w + n, t % w]


def _new_store(n, m, batch, like, fill=0.0):
    """A `[M − 1, L, B]` buffer, the transposed fold: anti-diagonal `t` is contiguous."""
    return torch.full((m - 1, _rows_needed(n, m), batch), fill, dtype=like.dtype, device=like.device)


def _diag(store, t, n):
    """Anti-diagonal `t` of a `_new_store`, `[N, B]`, as a view; off-grid rows hold other cells."""
    w = store.shape[0]
    return store[t % w, t // w: t // w + n]


def _write_diag(store, t, n, values, valid):
    """Writes the `valid` cells of anti-diagonal `t`, keeping the cells it aliases."""
    stored = _diag(store, t, n)
    stored.copy_(torch.where(valid, values, stored))


def _store_cells(store, n, m):
    """`[M − 1, L, B]` store → `[N, M, B]` cells."""
    return store.transpose(0, 1).reshape(-1, store.shape[2])[: n * m].reshape(n, m, -1)


def _shift_down(x, fill):
    """`out[i] = x[i − 1]`, `out[0] = fill`: the predecessor row of each cell."""
    return torch.cat([torch.full_like(x[:1], fill), x[:-1]])


def _shift_up(x):
    """`out[i] = x[i + 1]`, zero past the end: the successor row of each cell."""
    return torch.cat([x[1:], torch.zeros_like(x[:1])])


def _softmin_weights(diag, up, left, inv_gamma):
    """`min`, unnormalised soft-argmin weights and their sum for three predecessors."""
    low = torch.minimum(torch.minimum(diag, up), left)
    e_diag = torch.exp((low - diag) * inv_gamma)
    e_up = torch.exp((low - up) * inv_gamma)
    e_left = torch.exp((low - left) * inv_gamma)
    return low, (e_diag, e_up, e_left), e_diag + e_up + e_left


def _grid_mask(t, rows, n, m, band):
    """`[N, 1]`: cells (i, t − i) of anti-diagonal `t` inside the matrix and the band."""
    cols = t - rows
    return (cols >= 0) & (cols < m) & (rows < n) & ((rows - cols).abs() <= band)


def _forward(cost, n_len, m_len, gamma, band):
    """Values `[B]` and every `r_{i, j}` (in a `_new_store`) for the backward."""
    batch, n, m = cost.shape
    inf = float("inf")
    inv_gamma = 1.0 / gamma
    rows = torch.arange(n, device=cost.device)[:, None]
    deltas = _cost_view(cost)
    # Cells outside the band are never written: +inf, the value of a pair without a path.
    r_store = _new_store(n, m, batch, cost, fill=inf)
    r_prev2 = r_prev1 = torch.full((n, batch), inf, dtype=cost.dtype, device=cost.device)
    for t in range(n + m - 1):
        # r_{0, 0} = 0 is the diagonal predecessor of the first cell only.
        diag = _shift_down(r_prev2, 0.0 if t == 0 else inf)
        up = _shift_down(r_prev1, inf)
        low, _, total = _softmin_weights(diag, up, r_prev1, inv_gamma)
        valid = _grid_mask(t, rows, n, m, band)
        r = torch.where(valid, _read_cost(deltas, t, n) + low - gamma * torch.log(total), inf)
        _write_diag(r_store, t, n, r, valid)
        r_prev2, r_prev1 = r_prev1, r
    cells = _store_cells(r_store, n, m)
    return cells[n_len - 1, m_len - 1, torch.arange(batch, device=cost.device)], r_store


def _backward(r_store, n_len, m_len, gamma, band, n, m):
    """Expected alignment `E = ∂value/∂cost`, `[B, N, M]`, from the forward's `r`."""
    batch = r_store.shape[2]
    inf = float("inf")
    inv_gamma = 1.0 / gamma
    rows = torch.arange(n, device=r_store.device)[:, None]
    zeros = torch.zeros((n, batch), dtype=r_store.dtype, device=r_store.device)
    e_store = torch.zeros_like(r_store)

    def read_r(t):
        if t < 0:
            return torch.full_like(zeros, inf)
        return torch.where(_grid_mask(t, rows, n, m, band), _diag(r_store, t, n), inf)

    # e_acc: E of anti-diagonal t, complete; e_acc_prev: what t − 1 has
    # received so far (from t + 1 through its diagonal predecessor).
    e_acc, e_acc_prev, r_prev1 = zeros, zeros, read_r(n + m - 3)
    for t in range(n + m - 2, -1, -1):
        cols = t - rows
        valid = (cols >= 0) & ((rows - cols).abs() <= band) & (rows < n_len) & (cols < m_len)
        end = valid & (rows == n_len - 1) & (cols == m_len - 1)
        e = torch.where(end, 1.0, torch.where(valid, e_acc, 0.0))
        _write_diag(e_store, t, n, e, valid)
        r_prev2 = read_r(t - 2)
        diag = _shift_down(r_prev2, 0.0 if t == 0 else inf)
        up = _shift_down(r_prev1, inf)
        _, (e_diag, e_up, e_left), total = _softmin_weights(diag, up, r_prev1, inv_gamma)
        scale = torch.where(valid, e / total, 0.0)
        # Off-grid cells have inf − inf = NaN weights; keep them out of the sums.
        to_up, to_left, to_diag = (torch.where(valid, scale * x, 0.0) for x in (e_up, e_left, e_diag))
        e_acc, e_acc_prev, r_prev1 = e_acc_prev + _shift_up(to_up) + to_left, _shift_up(to_diag), r_prev2
    return _store_cells(e_store, n, m).permute(2, 0, 1)


class _SoftDTW(torch.autograd.Function):
    """Values of `soft_dtw`; the backward is the expected alignment times the upstream gradient."""

    @staticmethod
    def forward(ctx, cost, n_len, m_len, gamma, band):
        with torch.no_grad(), _one_thread():
            values, r_store = _forward(cost, n_len, m_len, gamma, band)
        ctx.save_for_backward(r_store, n_len, m_len)
        ctx.gamma, ctx.band, ctx.n, ctx.m = gamma, band, cost.shape[1], cost.shape[2]
        return values

    @staticmethod
    def backward(ctx, upstream):
        r_store, n_len, m_len = ctx.saved_tensors
        with torch.no_grad(), _one_thread():
            alignment = _backward(r_store, n_len, m_len, ctx.gamma, ctx.band, ctx.n, ctx.m)
        return alignment * upstream[:, None, None].to(alignment.dtype), None, None, None, None


def _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth):
    """Lengths, γ and band as the kernels take them; pads a one-column cost."""
    batch, n, m = cost.shape

    def lengths(given, full):
        if given is None:
            return torch.full((batch,), full, dtype=torch.long, device=cost.device)
        return torch.as_tensor(given, device=cost.device).long()

    n_len, m_len = lengths(row_lengths, n), lengths(col_lengths, m)
    band = n + m if bandwidth is None else int(bandwidth)
    if m == 1:
        # The fold has stride M − 1: give a one-column cost a padding column,
        # which the column lengths (all 1) keep out; autodiff of the pad drops its gradient.
        cost = torch.nn.functional.pad(cost, (0, 1))
    # γ is a plain number in the recursion (a tensor would sync per step).
    return cost, n_len, m_len, float(gamma), band


def soft_dtw(cost, row_lengths, col_lengths, gamma, bandwidth):
    """Values `[B]` of a float32/64 cost `[B, N, M]`, differentiable w.r.t. it.

    Args:
        cost: `[B, N, M]`, padding already zeroed.
        row_lengths, col_lengths: int `[B]` in [1, N] and [1, M], or None.
        gamma: γ > 0, a Python float or a scalar tensor.
        bandwidth: Sakoe–Chiba band (int) or None.
    """
    return _SoftDTW.apply(*_kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth))


def soft_dtw_alignment(cost, row_lengths, col_lengths, gamma, bandwidth):
    """`∂ values / ∂ cost`, `[B, N, M]`; arguments as for `soft_dtw`."""
    m = cost.shape[2]
    cost, n_len, m_len, gamma, band = _kernel_inputs(cost, row_lengths, col_lengths, gamma, bandwidth)
    with torch.no_grad(), _one_thread():
        _, r_store = _forward(cost, n_len, m_len, gamma, band)
        return _backward(r_store, n_len, m_len, gamma, band, cost.shape[1], cost.shape[2])[:, :, :m]
