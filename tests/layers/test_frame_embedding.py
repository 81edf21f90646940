"""Tests of FrameEmbedding: a dense layer per frame, of the frame joined with a per-video vector."""
import keras
import numpy as np
import pytest

from vt_keras.errors import ConfigError, ShapeError
from vt_keras.layers.frame_embedding import FrameEmbedding
from vt_keras.testing import run_layer_test


def _data(rng, b=3, t=5, d=4, e=2):
    return rng.normal(size=(b, t, d)).astype("float32"), rng.normal(size=(b, e)).astype("float32")


def _dense_on_concatenation(layer, x, context, activation):
    """One dense layer on [x_t ; c] for every frame, in float64, from the layer's own weights."""
    x = x.astype(np.float64)
    kernel = np.asarray(layer.kernel, np.float64)
    if context is not None:
        joined = np.repeat(context.astype(np.float64)[:, None], x.shape[1], 1)
        x = np.concatenate([x, joined], -1)
        kernel = np.concatenate([kernel, np.asarray(layer.context_kernel, np.float64)])
    out = x @ kernel + np.asarray(layer.bias, np.float64)
    return np.maximum(out, 0.0) if activation == "relu" else out


@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("activation", ["relu", None])
def test_equals_a_dense_layer_on_the_joined_frames(with_context, activation, rng):
    x, context = _data(rng)
    layer = FrameEmbedding(6, activation=activation)
    context = context if with_context else None
    got = layer(x, context=context)
    assert got.shape == (3, 5, 6)
    np.testing.assert_allclose(np.asarray(got), _dense_on_concatenation(layer, x, context, activation),
                               rtol=1e-5, atol=1e-6)
    assert (layer.context_kernel is not None) == with_context


def test_without_context_it_is_keras_dense(rng):
    x, _ = _data(rng)
    layer, dense = FrameEmbedding(6), keras.layers.Dense(6, activation="relu")
    layer.build(x.shape)
    dense.build(x.shape)
    dense.set_weights([np.asarray(layer.kernel), rng.normal(size=6).astype("f")])
    layer.bias.assign(dense.bias)
    np.testing.assert_allclose(layer(x), dense(x), rtol=1e-6, atol=1e-6)


def test_initial_kernels_follow_glorot_over_the_joined_fan_in():
    """Like one Dense on [x ; c]: uniform in ±sqrt(6 / (D + E + units)), here D = 200, E = 100, units = 300."""
    keras.utils.set_random_seed(0)
    layer = FrameEmbedding(300)
    layer(np.zeros((1, 2, 200), "f"), context=np.zeros((1, 100), "f"))
    limit = np.sqrt(6.0 / (200 + 100 + 300))
    for kernel in (np.asarray(layer.kernel), np.asarray(layer.context_kernel)):
        assert np.abs(kernel).max() <= limit
        # 60,000 or 30,000 uniform draws reach within 1% of the limit with probability 1 - (0.99)^30000.
        assert np.abs(kernel).max() > 0.99 * limit


def test_layer_contract_with_context(rng):
    x, context = _data(rng)
    mask = np.ones(x.shape[:2], bool)
    mask[0, 3:] = False
    run_layer_test(FrameEmbedding, {"units": 6}, x, expected_output_shape=(3, 5, 6), mask=mask,
                   call_kwargs={"context": context})


def test_layer_contract_without_context(rng):
    x, _ = _data(rng)
    run_layer_test(FrameEmbedding, {"units": 6, "activation": None}, x, expected_output_shape=(3, 5, 6))


def test_mask_is_passed_on(rng):
    x, context = _data(rng)
    mask = np.ones(x.shape[:2], bool)
    mask[1, 2:] = False
    layer = FrameEmbedding(6)
    layer(x, context=context)
    np.testing.assert_array_equal(layer.compute_mask(x, mask), mask)


def test_errors_name_the_input():
    layer = FrameEmbedding(4, name="branch")
    layer(np.zeros((2, 3, 5), "f"), context=np.zeros((2, 2), "f"))
    with pytest.raises(ShapeError, match=r"branch \(FrameEmbedding\): context must be given on every call"):
        layer(np.zeros((2, 3, 5), "f"))
    with pytest.raises(ShapeError, match=r"inputs must be \[batch, time, features\].*found shape \(2, 5\)"):
        FrameEmbedding(4)(np.zeros((2, 5), "f"))
    with pytest.raises(ShapeError, match=r"context must be \[batch, features\].*found shape \(2, 1, 3\)"):
        FrameEmbedding(4)(np.zeros((2, 3, 5), "f"), context=np.zeros((2, 1, 3), "f"))
    with pytest.raises(ConfigError, match=r"units must be a positive int; got 0"):
        FrameEmbedding(0)
