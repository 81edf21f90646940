"""Soft-DTW kernel against brute force and an independent float64 numpy recursion."""
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.soft_dtw import pairwise_cost, soft_dtw, soft_dtw_alignment, soft_dtw_divergence


# ---------------------------------------------------------------- references
def _paths(n, m, bandwidth=None):
    """Every monotone alignment path from (0, 0) to (n − 1, m − 1), as cell lists."""
    out = []

    def walk(path):
        i, j = path[-1]
        if (i, j) == (n - 1, m - 1):
            out.append(path)
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            a, b = i + di, j + dj
            if a < n and b < m and (bandwidth is None or abs(a - b) <= bandwidth):
                walk(path + [(a, b)])

    walk([(0, 0)])
    return out


def _brute_force(cost, gamma, bandwidth=None):
    """Value −γ log Σ_paths exp(−cost(path)/γ) and its gradient (expected path)."""
    paths = _paths(*cost.shape, bandwidth)
    if not paths:
        return np.inf, np.zeros_like(cost)
    totals = np.array([sum(cost[c] for c in p) for p in paths])
    low = totals.min()
    weights = np.exp(-(totals - low) / gamma)
    value = low - gamma * np.log(weights.sum())
    weights /= weights.sum()
    grad = np.zeros_like(cost)
    for w, p in zip(weights, paths):
        for c in p:
            grad[c] += w
    return value, grad


def _numpy_sdtw(cost, gamma):
    """Float64 forward R and the textbook backward (Cuturi & Blondel, Alg. 2)."""
    n, m = cost.shape
    r = np.full((n + 2, m + 2), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = np.array([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]])
            low = prev.min()
            r[i, j] = cost[i - 1, j - 1] + low - gamma * np.log(np.exp(-(prev - low) / gamma).sum())
    value = r[n, m]
    delta = np.zeros((n + 2, m + 2))
    delta[1 : n + 1, 1 : m + 1] = cost
    e = np.zeros((n + 2, m + 2))
    e[n + 1, m + 1] = 1.0
    r[1 : n + 1, m + 1] = -np.inf
    r[n + 1, 1 : m + 1] = -np.inf
    r[n + 1, m + 1] = r[n, m]
    for j in range(m, 0, -1):
        for i in range(n, 0, -1):
            a = np.exp((r[i + 1, j] - r[i, j] - delta[i + 1, j]) / gamma)
            b = np.exp((r[i, j + 1] - r[i, j] - delta[i, j + 1]) / gamma)
            c = np.exp((r[i + 1, j + 1] - r[i, j] - delta[i + 1, j + 1]) / gamma)
            e[i, j] = e[i + 1, j] * a + e[i, j + 1] * b + e[i + 1, j + 1] * c
    return value, e[1 : n + 1, 1 : m + 1]


def _dtw(cost):
    n, m = cost.shape
    r = np.full((n + 1, m + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r[i, j] = cost[i - 1, j - 1] + min(r[i - 1, j - 1], r[i - 1, j], r[i, j - 1])
    return r[n, m]


def _value_and_grad(cost, gamma, **kwargs):
    cost = tf.convert_to_tensor(cost)
    with tf.GradientTape() as tape:
        tape.watch(cost)
        values = soft_dtw(cost, gamma, **kwargs)
    return values.numpy(), tape.gradient(values, cost).numpy()


# --------------------------------------------------------------------- tests
# XLA compiles the kernel once per input shape, which dominates test time:
# the tests share a few shapes, SMALL [5, 4, 4] and MEDIUM [3, 13, 9].
SMALL_LENGTHS = ([3, 4, 1, 4, 2], [4, 4, 3, 1, 3])


@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_matches_brute_force_over_all_paths(rng, gamma):
    cost = rng.normal(size=(5, 4, 4))
    rows, cols = SMALL_LENGTHS
    values, grads = _value_and_grad(cost, gamma, row_lengths=rows, col_lengths=cols)
    for b in range(5):
        value, grad = _brute_force(cost[b, : rows[b], : cols[b]], gamma)
        np.testing.assert_allclose(values[b], value, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grads[b, : rows[b], : cols[b]], grad, atol=1e-12)


def test_single_column(rng):
    cost = rng.normal(size=(2, 3, 1))
    values, grads = _value_and_grad(cost, 0.1)
    np.testing.assert_allclose(values, cost.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(grads, 1.0)


@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_matches_numpy_recursion_float64(rng, gamma):
    cost = rng.normal(size=(3, 13, 9)) - 0.5
    values, grads = _value_and_grad(cost, gamma)
    assert values.dtype == np.float64
    for b in range(3):
        value, grad = _numpy_sdtw(cost[b], gamma)
        np.testing.assert_allclose(values[b], value, rtol=1e-12)
        # The textbook backward itself loses ~1e-12 at γ = 0.01.
        np.testing.assert_allclose(grads[b], grad, atol=1e-9)


@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_float32_stays_close_to_float64(rng, gamma):
    cost = rng.normal(size=(3, 13, 9))
    values, grads = _value_and_grad(cost.astype(np.float32), gamma)
    assert values.dtype == np.float32
    for b in range(3):
        value, grad = _numpy_sdtw(cost[b], gamma)
        np.testing.assert_allclose(values[b], value, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads[b], grad, atol=1e-4)


def test_bounds_by_dtw_and_delannoy_count(rng):
    assert len(_paths(8, 8)) == 48639  # Delannoy(7, 7): alignment paths of 8 × 8
    cost = rng.normal(size=(3, 13, 9))
    eights = [8, 8, 8]
    dtw = [_dtw(c[:8, :8]) for c in cost]
    for gamma in (0.01, 0.3, 1.0):
        values = soft_dtw(cost, gamma, row_lengths=eights, col_lengths=eights).numpy()
        for b in range(3):
            assert dtw[b] - gamma * np.log(48639) - 1e-12 <= values[b] <= dtw[b] + 1e-12
    np.testing.assert_allclose(soft_dtw(cost, 1e-4, row_lengths=eights, col_lengths=eights).numpy(), dtw, atol=1e-3)


def test_symmetric_under_transposition(rng):
    cost = rng.normal(size=(5, 4, 4))
    rows, cols = SMALL_LENGTHS
    values, grads = _value_and_grad(cost, 0.2, row_lengths=rows, col_lengths=cols)
    values_t, grads_t = _value_and_grad(np.swapaxes(cost, 1, 2), 0.2, row_lengths=cols, col_lengths=rows)
    np.testing.assert_allclose(values, values_t, rtol=1e-12)
    np.testing.assert_allclose(grads, np.swapaxes(grads_t, 1, 2), atol=1e-12)


def test_alignment_corners_and_range(rng):
    cost = rng.normal(size=(3, 13, 9)).astype(np.float32)
    e = soft_dtw_alignment(cost, gamma=0.5).numpy()
    np.testing.assert_allclose(e[:, 0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(e[:, -1, -1], 1.0, atol=1e-6)
    assert e.min() >= 0.0 and e.max() <= 1.0 + 1e-6
    # The alignment is the gradient of the value.
    np.testing.assert_allclose(e, _value_and_grad(cost, 0.5)[1], atol=1e-6)


def test_variable_lengths_equal_unpadded(rng):
    cost = rng.normal(size=(3, 13, 9))
    rows, cols = np.array([13, 4, 7]), np.array([9, 9, 2])
    padded = cost.copy()
    for b in range(3):  # garbage in the padding must not matter
        padded[b, rows[b] :, :] = np.nan
        padded[b, :, cols[b] :] = 1e30
    values, grads = _value_and_grad(padded, 0.3, row_lengths=rows, col_lengths=cols)
    for b in range(3):
        n, m = rows[b], cols[b]
        value, grad = _numpy_sdtw(cost[b, :n, :m], 0.3)
        np.testing.assert_allclose(values[b], value, rtol=1e-12)
        np.testing.assert_allclose(grads[b, :n, :m], grad, atol=1e-12)
        assert np.all(grads[b, n:, :] == 0.0) and np.all(grads[b, :, m:] == 0.0)


@pytest.mark.parametrize("bandwidth", [0, 1, 2])
def test_sakoe_chiba_band_matches_brute_force(rng, bandwidth):
    cost = rng.normal(size=(5, 4, 4))
    rows, cols = SMALL_LENGTHS
    values, grads = _value_and_grad(cost, 0.2, row_lengths=rows, col_lengths=cols, bandwidth=bandwidth)
    for b in range(5):
        value, grad = _brute_force(cost[b, : rows[b], : cols[b]], 0.2, bandwidth)
        # No path within the band: +inf, and no gradient.
        assert np.isinf(value) == (abs(rows[b] - cols[b]) > bandwidth)
        np.testing.assert_allclose(values[b], value, rtol=1e-12)
        np.testing.assert_allclose(grads[b, : rows[b], : cols[b]], grad, atol=1e-12)
    assert np.all(np.isfinite(grads))


@pytest.mark.parametrize("gamma", [0.001, 0.01])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_no_nan_or_inf_at_small_gamma_and_large_costs(rng, gamma, scale):
    cost = (rng.normal(size=(3, 13, 9)) * scale).astype(np.float32)
    values, grads = _value_and_grad(cost, gamma)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    assert grads.min() >= 0.0 and grads.max() <= 1.0 + 1e-5
    dtw = [_dtw(c) for c in cost.astype(np.float64)]
    np.testing.assert_allclose(values, dtw, rtol=1e-5, atol=gamma * np.log(1e6))


def _graph_value_and_grad(c):
    with tf.GradientTape() as tape:
        tape.watch(c)
        values = soft_dtw(c, 0.1, row_lengths=[13, 2, 7], col_lengths=[9, 9, 1], bandwidth=6)
    return values, tape.gradient(values, c)


@pytest.mark.parametrize("mode", ["tf_function", "jit_compile", "unknown_shape"])
def test_graph_and_xla_agree_with_eager(rng, mode):
    cost = tf.constant(rng.normal(size=(3, 13, 9)).astype(np.float32))
    expected = _graph_value_and_grad(cost)
    kwargs = {
        "tf_function": {},
        "jit_compile": {"jit_compile": True},
        "unknown_shape": {"input_signature": [tf.TensorSpec([None, None, None], tf.float32)]},
    }[mode]
    for got, want in zip(tf.function(_graph_value_and_grad, **kwargs)(cost), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)


def test_inside_mirrored_strategy_replicas(rng, logical_cpus):
    strategy = tf.distribute.MirroredStrategy(logical_cpus)
    cost = tf.constant(rng.normal(size=(3, 13, 9)).astype(np.float32))
    expected = _graph_value_and_grad(cost)
    values, grads = tf.function(lambda: strategy.run(lambda: _graph_value_and_grad(cost)))()
    for v, g in zip(strategy.experimental_local_results(values), strategy.experimental_local_results(grads)):
        np.testing.assert_allclose(v.numpy(), expected[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(g.numpy(), expected[1].numpy(), atol=1e-6)


def test_half_precision_input_computes_in_float32(rng):
    cost = rng.normal(size=(3, 13, 9)).astype(np.float16)
    values, grads = _value_and_grad(tf.constant(cost), 0.5)
    assert values.dtype == np.float32 and grads.dtype == np.float16
    np.testing.assert_allclose(values, [_numpy_sdtw(c.astype(np.float64), 0.5)[0] for c in cost], rtol=1e-5)


def test_pairwise_cost_metrics(rng):
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 5, 3))
    sq = pairwise_cost(x, y, "squared_euclidean").numpy()
    np.testing.assert_allclose(sq, ((x[:, :, None] - y[:, None]) ** 2).sum(-1), atol=1e-12)
    cos = pairwise_cost(x, y, "negative_cosine").numpy()
    xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=-1, keepdims=True)
    np.testing.assert_allclose(cos, -np.einsum("bid,bjd->bij", xn, yn), atol=1e-12)


def test_divergence(rng):
    x, y = rng.normal(size=(5, 4, 2)), rng.normal(size=(5, 4, 2))
    d = soft_dtw_divergence(x, y, gamma=0.5).numpy()
    sq = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
    for k in range(5):
        expected = _numpy_sdtw(sq(x[k], y[k]), 0.5)[0] - 0.5 * (
            _numpy_sdtw(sq(x[k], x[k]), 0.5)[0] + _numpy_sdtw(sq(y[k], y[k]), 0.5)[0]
        )
        np.testing.assert_allclose(d[k], expected, rtol=1e-10)
    assert np.all(d > 0)
    np.testing.assert_allclose(soft_dtw_divergence(x, x, gamma=0.5).numpy(), 0.0, atol=1e-12)


def test_clear_errors():
    with pytest.raises(UserError, match=r"cost must have shape \[B, N, M\]"):
        soft_dtw(np.zeros((3, 4)), 1.0)
    with pytest.raises(ConfigError, match="gamma must be > 0, found 0"):
        soft_dtw(np.zeros((1, 3, 4)), 0)
    with pytest.raises(ConfigError, match="bandwidth must be a non-negative integer"):
        soft_dtw(np.zeros((1, 3, 4)), 1.0, bandwidth=-1)
    with pytest.raises(UserError, match="row_lengths must be an integer tensor of shape"):
        soft_dtw(np.zeros((1, 3, 4)), 1.0, row_lengths=[[1]])
    with pytest.raises(ConfigError, match="metric must be one of"):
        pairwise_cost(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), metric="cosine")


def test_path_enumeration_is_complete():
    # The brute force is itself checked: Delannoy numbers D(n − 1, m − 1).
    assert [len(_paths(3, m)) for m in range(1, 6)] == [1, 5, 13, 25, 41]
    assert len(_paths(4, 4, bandwidth=0)) == 1
    assert all(len(set(p)) == len(p) for p in _paths(3, 3))
