"""Tests of MixtureOfExperts and ContextGating."""
import keras
import numpy as np
import pytest

from vt_keras.errors import ConfigError
from vt_keras.layers.heads import ContextGating, MixtureOfExperts
from vt_keras.testing import run_layer_test


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _moe_reference(x, gate_kernel, expert_kernel, expert_bias, num_classes, m):
    """Class-by-class float64 loop over the MoE equation."""
    x = x.astype(np.float64)
    out = np.zeros((x.shape[0], num_classes))
    for c in range(num_classes):
        g = x @ gate_kernel[:, c * (m + 1):(c + 1) * (m + 1)]
        e = x @ expert_kernel[:, c * m:(c + 1) * m] + expert_bias[c * m:(c + 1) * m]
        out[:, c] = np.sum(_softmax(g)[:, :m] * _sigmoid(e), axis=1)
    return out


def test_moe_layer_contract(rng):
    x = rng.normal(size=(4, 6)).astype("float32")
    run_layer_test(
        MixtureOfExperts, {"num_classes": 5, "num_mixtures": 3, "l2_penalty": 1e-6},
        x, expected_output_shape=(4, 5),
    )


@pytest.mark.parametrize("num_mixtures", [1, 2, 4])
def test_moe_matches_numpy(rng, num_mixtures):
    layer = MixtureOfExperts(num_classes=3, num_mixtures=num_mixtures)
    x = rng.normal(size=(5, 7)).astype("float32")
    layer.build(x.shape)
    # Random non-zero weights (the expert bias initialises at zero).
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    expected = _moe_reference(
        x, layer.gate_dense.kernel.numpy(), layer.expert_dense.kernel.numpy(),
        layer.expert_dense.bias.numpy(), 3, num_mixtures,
    )
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert np.all((out >= 0) & (out < 1))


def test_moe_dummy_gate_can_switch_a_class_off(rng):
    layer = MixtureOfExperts(num_classes=2, num_mixtures=2)
    layer.build((None, 1))
    # Gates for class 0 all favour the dummy entry; class 1 a confident expert.
    layer.gate_dense.kernel.assign(np.array([[0, 0, 50, 50, 0, 0]], "float32"))
    layer.expert_dense.kernel.assign(np.array([[50, 50, 50, 0]], "float32"))
    out = keras.ops.convert_to_numpy(layer(np.ones((1, 1), "float32")))
    assert out[0, 0] < 1e-6  # experts say ~1, yet the dummy gate wins
    assert out[0, 1] > 0.999


def test_moe_l2_penalty_on_both_kernels(rng):
    layer = MixtureOfExperts(num_classes=2, num_mixtures=2, l2_penalty=1e-2)
    layer(rng.normal(size=(3, 4)).astype("float32"))
    g = layer.gate_dense.kernel.numpy()
    e = layer.expert_dense.kernel.numpy()
    expected = 1e-2 * (np.sum(g.astype(np.float64) ** 2) + np.sum(e.astype(np.float64) ** 2))
    np.testing.assert_allclose(float(sum(layer.losses)), expected, rtol=1e-5)


def test_moe_mixed_precision_keeps_float32_probabilities(rng, monkeypatch):
    seen = []
    for name in ("softmax", "sigmoid"):
        original = getattr(keras.ops, name)

        def spy(x, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, keras.backend.standardize_dtype(x.dtype)))
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(keras.ops, name, spy)
    layer = MixtureOfExperts(num_classes=4, dtype="mixed_bfloat16")
    out = layer(rng.normal(size=(2, 8)).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert sorted(seen) == [("sigmoid", "float32"), ("softmax", "float32")]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_classes": 0}, "num_classes must be >= 1, got 0"),
     ({"num_classes": 3, "num_mixtures": 0}, "num_mixtures must be >= 1, got 0"),
     ({"num_classes": 3, "l2_penalty": -1.0}, "l2_penalty must be >= 0")],
)
def test_moe_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MixtureOfExperts(**kwargs)


@pytest.mark.parametrize("use_batch_norm", [False, True])
def test_context_gating_layer_contract(rng, use_batch_norm):
    x = rng.normal(size=(4, 6)).astype("float32")
    run_layer_test(ContextGating, {"use_batch_norm": use_batch_norm}, x,
                   expected_output_shape=(4, 6))


def test_context_gating_sequence_with_mask(rng):
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]], bool)
    run_layer_test(ContextGating, {"use_batch_norm": True}, x, mask=mask,
                   expected_output_shape=(3, 5, 4), run_masking_invariance=True)
    layer = ContextGating()
    layer(x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.compute_mask(x, mask)), mask
    )


def test_context_gating_matches_numpy(rng):
    layer = ContextGating()
    x = rng.normal(size=(4, 5)).astype("float32")
    layer.build(x.shape)
    layer.gate_dense.bias.assign(rng.normal(size=(5,)).astype("float32"))
    w = layer.gate_dense.kernel.numpy().astype(np.float64)
    b = layer.gate_dense.bias.numpy().astype(np.float64)
    expected = x * _sigmoid(x.astype(np.float64) @ w + b)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected,
                               rtol=1e-5, atol=1e-6)


def test_context_gating_batch_norm_ignores_padded_frames(rng):
    """In training, batch statistics come from the valid frames only."""
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
    x_garbage = np.where(mask[..., None], x, 100.0).astype("float32")
    layer = ContextGating(use_batch_norm=True)
    layer.build(x.shape)
    out = keras.ops.convert_to_numpy(layer(x_garbage, mask=mask, training=True))
    # Independent re-derivation: batch-normalise W x over the 5 valid frames.
    w = layer.gate_dense.kernel.numpy().astype(np.float64)
    valid = x[mask].astype(np.float64)
    logits = valid @ w
    eps = layer.batch_norm.epsilon
    normed = (logits - logits.mean(0)) / np.sqrt(logits.var(0) + eps)
    np.testing.assert_allclose(out[mask], valid * _sigmoid(normed), rtol=1e-4, atol=1e-5)
