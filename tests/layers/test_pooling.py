"""Tests of FramePooling."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.errors import ConfigError
from vt_keras.layers.pooling import FramePooling
from vt_keras.testing import run_layer_test


def _data(rng, b=4, t=6, d=3):
    x = rng.normal(size=(b, t, d)).astype("float32")
    mask = np.ones((b, t), bool)
    mask[0, 2:] = False
    mask[1, 5:] = False
    mask[3, :] = False  # an all-padded video
    return x, mask


def _reference(x, mask, mode):
    """Row-by-row float64 pooling over the valid frames; zeros if none."""
    rows = []
    for xi, mi in zip(x.astype(np.float64), mask):
        valid = xi[mi]
        mean = valid.mean(0) if len(valid) else np.zeros(x.shape[-1])
        mx = valid.max(0) if len(valid) else np.zeros(x.shape[-1])
        rows.append({"mean": mean, "max": mx, "mean_max": np.concatenate([mean, mx])}[mode])
    return np.stack(rows)


@pytest.mark.parametrize("mode, width", [("mean", 3), ("max", 3), ("mean_max", 6)])
def test_layer_contract_and_masking_invariance(rng, mode, width):
    x, mask = _data(rng)
    out = run_layer_test(FramePooling, {"mode": mode}, x, mask=mask,
                         expected_output_shape=(4, width), run_masking_invariance=True)
    np.testing.assert_allclose(out, _reference(x, mask, mode), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "max", "mean_max"])
def test_all_padded_row_is_zero_with_finite_gradient(rng, mode):
    x, mask = _data(rng)
    x = x - 5.0  # all negative: a max that leaked the fill value would show
    layer = FramePooling(mode)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = layer(xt, mask=mask)
        loss = tf.reduce_sum(out ** 2)
    grad = tape.gradient(loss, xt).numpy()
    out = out.numpy()
    np.testing.assert_array_equal(out[3], 0.0)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[~mask], 0.0)  # padded frames get no gradient
    np.testing.assert_allclose(out, _reference(x, mask, mode), rtol=1e-6, atol=1e-6)


def test_without_mask_pools_every_frame(rng):
    x, _ = _data(rng)
    out = FramePooling("mean_max")(x)
    full = np.ones(x.shape[:2], bool)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), _reference(x, full, "mean_max"),
                               rtol=1e-6, atol=1e-6)


def test_output_has_no_mask(rng):
    x, mask = _data(rng)
    inputs = keras.Input((6, 3))
    masked = keras.layers.Masking(0.0)(inputs)
    pooled = FramePooling()(masked)
    assert getattr(pooled, "_keras_mask", None) is None
    assert FramePooling().compute_mask(x, mask) is None


def test_mixed_bfloat16_mean_over_many_frames_is_accurate(rng):
    """A 300-frame mean under mixed_bfloat16 is within one bfloat16 rounding."""
    x = (1.0 + 0.01 * rng.normal(size=(2, 300, 4))).astype("float32")
    mask = np.ones((2, 300), bool)
    mask[1, 200:] = False
    out = FramePooling("mean", dtype="mixed_bfloat16")(x, mask=mask)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    # The layer sees bfloat16 frames: reference on those, in float64.
    xq = tf.cast(tf.cast(x, tf.bfloat16), tf.float64).numpy()
    expected = _reference(xq, mask, "mean")
    got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    np.testing.assert_allclose(got, expected, rtol=2 ** -8)


def test_rejects_unknown_mode():
    with pytest.raises(ConfigError, match=r"mode must be one of .*'mean_max'.*got 'sum'"):
        FramePooling("sum")
