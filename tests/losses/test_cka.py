"""Tests of vt_keras.losses.cka against a float64 numpy gram-form re-derivation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.cka import CKALoss, cka

ESTIMATORS = [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)]


# --- independent float64 reference: gram matrices, HKH, Song et al.'s formula


def np_linear_gram(x):
    return x @ x.T


def np_rbf_gram(x, threshold, median=np.median):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * threshold**2 * median(d2)))


def np_hsic_biased(k, l):
    h = np.eye(len(k)) - 1.0 / len(k)
    return np.trace(k @ h @ l @ h)


def np_hsic_unbiased(k, l):
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def np_cka(x, y, kernel="linear", debiased=False, threshold=1.0, median=np.median):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if kernel == "linear":
        k, l = np_linear_gram(x), np_linear_gram(y)
    else:
        k, l = np_rbf_gram(x, threshold, median), np_rbf_gram(y, threshold, median)
    hsic = np_hsic_unbiased if debiased else np_hsic_biased
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def lower_median(values):
    flat = np.sort(values.ravel())
    return flat[(len(flat) - 1) // 2]


@pytest.fixture
def xy(rng):
    x = rng.normal(size=(20, 5))
    y = rng.normal(size=(20, 7)) + 0.5 * x @ rng.normal(size=(5, 7))
    return x, y


# --- values


def test_reference_values():
    # Values of Kornblith et al.'s estimators on this input (also in docs/cka.md); their derivation
    # is np_cka above, the float64 gram form written from the definitions, checked here first.
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    assert np_cka(x, y) == pytest.approx(0.55761, abs=1e-5)
    assert np_cka(x, y, kernel="rbf", threshold=0.5) == pytest.approx(0.65483, abs=1e-5)
    assert np_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=1e-5)
    x, y = x.astype("float32"), y.astype("float32")
    assert float(cka(x, y)) == pytest.approx(0.55761, abs=1e-5)
    assert float(cka(x, y, kernel="rbf", rbf_threshold=0.5)) == pytest.approx(0.65483, abs=1e-5)
    assert float(cka(x, y, debiased=True)) == pytest.approx(0.51346, abs=1e-5)


def test_matches_float64_gram_form(xy):
    x, y = xy
    for kernel, debiased in ESTIMATORS:
        for threshold in (0.5, 1.0):
            expected = np_cka(x, y, kernel, debiased, threshold)
            kwargs = dict(kernel=kernel, debiased=debiased, rbf_threshold=threshold)
            got64 = float(cka(x, y, **kwargs))
            got32 = float(cka(x.astype("float32"), y.astype("float32"), **kwargs))
            assert got64 == pytest.approx(expected, abs=1e-9), (kernel, debiased, threshold)
            assert got32 == pytest.approx(expected, abs=2e-6), (kernel, debiased, threshold)


def test_rbf_median_averages_the_two_middle_values(xy):
    # n = 20 gives 400 squared distances: an even count, whose two middle
    # values differ, so a lower-median implementation would not match.
    x, y = xy
    numpy_convention = np_cka(x, y, "rbf", threshold=0.5)
    lower = np_cka(x, y, "rbf", threshold=0.5, median=lower_median)
    assert abs(numpy_convention - lower) > 1e-6
    got = float(cka(x, y, kernel="rbf", rbf_threshold=0.5))
    assert got == pytest.approx(numpy_convention, abs=1e-9)


def test_self_similarity_is_one(xy):
    x = xy[0].astype("float32")
    for kernel, debiased in ESTIMATORS:
        assert float(cka(x, x, kernel=kernel, debiased=debiased)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kernel,debiased", ESTIMATORS)
def test_invariant_to_orthogonal_transforms_and_isotropic_scaling(rng, xy, kernel, debiased):
    x, y = xy
    u, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    base = float(cka(x, y, kernel=kernel, debiased=debiased))
    moved = float(cka(3.7 * x @ u, 0.02 * y @ v, kernel=kernel, debiased=debiased))
    assert moved == pytest.approx(base, abs=1e-9)
    # ... but not to non-isotropic scaling, which is what makes it informative.
    stretched = float(cka(x * np.array([10.0, 1, 1, 1, 0.1]), y, kernel=kernel, debiased=debiased))
    assert abs(stretched - base) > 1e-3


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_form_is_exact_with_large_offsets_in_float32(debiased):
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    expected = np_cka(x, y, debiased=debiased)  # CKA is translation invariant
    got = float(cka((x + 1e3).astype("float32"), (y - 1e3).astype("float32"), debiased=debiased))
    assert got == pytest.approx(expected, abs=5e-6)
    # The float32 gram form drifts at this offset: that is why the feature form is used.
    x32, y32 = (x + 1e3).astype("float32"), (y - 1e3).astype("float32")
    h = (np.eye(100) - 0.01).astype("float32")
    kc, lc = h @ (x32 @ x32.T) @ h, h @ (y32 @ y32.T) @ h
    gram32 = (kc * lc).sum() / np.sqrt((kc * kc).sum() * (lc * lc).sum())
    if not debiased:
        assert abs(gram32 - expected) > 1e-3


def test_half_precision_inputs_are_computed_in_float32(xy):
    x, y = xy
    value = cka(keras.ops.cast(x, "bfloat16"), keras.ops.cast(y, "float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    rounded = np_cka(
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float64")),
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(y, "float16"), "float64")),
    )
    assert float(value) == pytest.approx(rounded, abs=1e-5)


def test_independent_features_inflate_the_biased_estimator_at_small_n(rng):
    x, y = rng.normal(size=(32, 512)), rng.normal(size=(32, 512))
    assert float(cka(x, y)) > 0.9
    assert abs(float(cka(x, y, debiased=True))) < 0.1


# --- masks, degenerate inputs and gradients


def test_masked_rows_are_ignored_even_when_they_hold_garbage(rng, xy):
    x, y = xy
    keep = rng.random(20) > 0.3
    x_bad, y_bad = x.astype("float32"), y.astype("float32")
    x_bad[~keep], y_bad[~keep] = 1e30, np.inf
    for kernel, debiased in ESTIMATORS:
        got = float(cka(x_bad, y_bad, kernel=kernel, debiased=debiased, mask=keep))
        expected = np_cka(x[keep], y[keep], kernel, debiased)
        assert got == pytest.approx(expected, abs=2e-6), (kernel, debiased)


def _value_and_grads(x, y, **kwargs):
    xv, yv = tf.Variable(x, dtype=tf.float32), tf.Variable(y, dtype=tf.float32)
    with tf.GradientTape() as tape:
        value = cka(xv, yv, **kwargs)
    return float(value), [g.numpy() for g in tape.gradient(value, [xv, yv])]


@pytest.mark.parametrize("case", ["constant", "collapsed", "both_constant", "offset"])
def test_degenerate_inputs_give_finite_values_and_gradients(rng, case):
    x, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 3))
    if case == "constant":
        x = np.full_like(x, 3.0)
    elif case == "collapsed":
        x = np.tile(x[:1], (12, 1))
    elif case == "both_constant":
        x, y = np.ones_like(x), np.zeros_like(y)
    else:
        x, y = x + 1e3, y - 1e3
    for kernel, debiased in ESTIMATORS:
        _check_degenerate(x, y, kernel, debiased, case)


def _check_degenerate(x, y, kernel, debiased, case):
    value, grads = _value_and_grads(x, y, kernel=kernel, debiased=debiased)
    assert np.isfinite(value), (kernel, debiased)
    assert all(np.all(np.isfinite(g)) for g in grads), (kernel, debiased)
    if case == "offset":
        # The reference sees the same float32-rounded inputs, centred in
        # float64 (CKA is translation invariant) so that it stays precise.
        x32, y32 = x.astype("float32").astype(np.float64), y.astype("float32").astype(np.float64)
        expected = np_cka(x32 - x32.mean(0), y32 - y32.mean(0), kernel, debiased)
        assert value == pytest.approx(expected, abs=1e-5), (kernel, debiased)
    else:
        assert value == 0.0, (kernel, debiased)


def test_rbf_gradient_holds_the_bandwidth_fixed(rng):
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = cka(xv, y, kernel="rbf", rbf_threshold=0.7)
    grad = tape.gradient(value, xv).numpy()

    d2 = lambda a: ((a[:, None] - a[None]) ** 2).sum(-1)  # noqa: E731
    sigma2 = 0.7**2 * np.median(d2(x))

    def fixed_bandwidth(a):
        k = np.exp(-d2(a) / (2 * sigma2))
        l = np_rbf_gram(y, 0.7)
        return np_hsic_biased(k, l) / np.sqrt(np_hsic_biased(k, k) * np_hsic_biased(l, l))

    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[idx] = 1e-6
        numeric[idx] = (fixed_bandwidth(x + step) - fixed_bandwidth(x - step)) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_dynamic_n_below_the_minimum_gives_zero(rng):
    # The two debiased estimators hold every small-N guard (the linear
    # (n-1)(n-2) terms, the RBF median of an empty set, the U-centring).
    estimators = [("linear", True), ("rbf", True)]

    @tf.function(input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, 3])])
    def values_and_grads(x, y):
        out = []
        for kernel, debiased in estimators:
            with tf.GradientTape() as tape:
                tape.watch([x, y])
                value = cka(x, y, kernel=kernel, debiased=debiased)
            out.append((value, tape.gradient(value, [x, y])))
        return out

    for n in range(5):
        x, y = rng.normal(size=(n, 4)), rng.normal(size=(n, 3))
        for (kernel, debiased), (value, grads) in zip(estimators, values_and_grads(x, y)):
            assert all(np.all(np.isfinite(g.numpy())) for g in grads), (n, kernel, debiased)
            if n < (4 if debiased else 2):
                assert float(value) == 0.0, (n, kernel, debiased)
            else:
                expected = np_cka(x, y, kernel, debiased)
                assert float(value) == pytest.approx(expected, abs=1e-5), (n, kernel, debiased)


# --- errors


def test_static_n_below_the_minimum_is_a_user_error(rng):
    with pytest.raises(UserError, match="debiased estimator needs at least 4 rows; got N=3"):
        cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), debiased=True)
    with pytest.raises(UserError, match="biased estimator needs at least 2 rows; got N=1"):
        cka(rng.normal(size=(1, 2)), rng.normal(size=(1, 2)))


def test_bad_arguments_are_user_errors(rng):
    x = rng.normal(size=(6, 2))
    with pytest.raises(UserError, match="same number of rows; got 6 and 5"):
        cka(x, x[:5])
    with pytest.raises(UserError, match=r"expected x \[N, d1\] and y \[N, d2\]; got shapes \(6, 2, 1\)"):
        cka(x[..., None], x)
    with pytest.raises(ConfigError, match="kernel must be one of"):
        cka(x, x, kernel="cosine")
    with pytest.raises(ConfigError, match="rbf_threshold must be > 0"):
        cka(x, x, kernel="rbf", rbf_threshold=0.0)


# --- the Loss wrapper


def test_loss_wrapper_is_one_minus_cka_and_serializes(xy):
    x, y = xy
    loss = CKALoss(kernel="rbf", debiased=True, rbf_threshold=0.5)
    assert float(loss(x, y)) == pytest.approx(1.0 - np_cka(x, y, "rbf", True, 0.5), abs=2e-6)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(revived, CKALoss)
    assert revived.get_config() == loss.get_config()
    assert float(revived(x, y)) == pytest.approx(float(loss(x, y)), abs=1e-7)


def test_loss_wrapper_trains_a_model_to_align(rng):
    target = rng.normal(size=(64, 6)).astype("float32")
    inputs = target @ rng.normal(size=(6, 6)) + 0.1 * rng.normal(size=(64, 6))
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(6)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CKALoss())
    losses = [model.train_on_batch(inputs.astype("float32"), target) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
