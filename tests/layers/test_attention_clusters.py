"""Tests for AttentionClusters and CrossModalAttentionClusters."""
import numpy as np
import pytest
import tensorflow as tf

import keras

from vt_keras.errors import ConfigError
from vt_keras.layers.attention_clusters import (
    AttentionClusters,
    CrossModalAttentionClusters,
)
from vt_keras.testing import run_layer_test


def _np_attention(frames, kernel, mask):
    """float64 softmax over valid frames of `frames @ kernel`: [B, K, T]."""
    scores = np.einsum("btd,dk->bkt", frames.astype(np.float64), kernel)
    weights = np.zeros_like(scores)
    for b in range(frames.shape[0]):
        valid = mask[b]
        s = scores[b][:, valid]
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        weights[b][:, valid] = e / e.sum(axis=-1, keepdims=True)
    return weights


def _np_pool(weights, hidden):
    return np.einsum("bkt,btd->bkd", weights, hidden.astype(np.float64)).reshape(
        hidden.shape[0], -1
    )


def _np_conv_same(x, kernel, bias):
    """Cross-correlation over time, zero padded like Keras 'same': [B, T, C]."""
    size = kernel.shape[0]
    left = (size - 1) // 2
    padded = np.pad(x, ((0, 0), (left, size - 1 - left), (0, 0)))
    out = np.zeros(x.shape[:2] + (kernel.shape[2],)) + bias
    for j in range(size):
        out += np.einsum("btc,co->bto", padded[:, j : j + x.shape[1]], kernel[j])
    return out


def _mask(lengths, steps):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


# ---- AttentionClusters ---------------------------------------------------


def test_output_and_attention_shapes(rng):
    x = rng.normal(size=(3, 7, 6)).astype("float32")
    for encoder, units, expected in [
        (None, None, 4 * 6), (None, 9, 4 * 6), ("gru", 5, 4 * 5), ("lstm", None, 4 * 6)
    ]:
        layer = AttentionClusters(num_clusters=4, encoder=encoder, encoder_units=units)
        out, weights = layer(x, return_attention=True)
        assert tuple(out.shape) == (3, expected)
        assert tuple(weights.shape) == (3, 4, 7)
        symbolic = layer(keras.Input((None, 6)), mask=keras.Input((None,), dtype="bool"))
        assert tuple(symbolic.shape) == (None, expected)


def test_values_match_numpy(rng):
    layer = AttentionClusters(num_clusters=3)
    x = rng.normal(size=(2, 6, 5)).astype("float32")
    mask = _mask([6, 4], 6)
    out, weights = layer(x, mask=mask, return_attention=True)
    kernel = layer.score_dense.kernel.numpy().astype(np.float64)
    expected_w = _np_attention(x, kernel, mask)
    np.testing.assert_allclose(weights.numpy(), expected_w, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), _np_pool(expected_w, x), atol=1e-5)
    assert np.all(weights.numpy()[1, :, 4:] == 0.0)


def test_gru_encoder_feeds_attention(rng):
    layer = AttentionClusters(num_clusters=2, encoder="gru", encoder_units=4)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = _mask([5, 3], 5)
    out = layer(x, mask=mask).numpy()
    gru = keras.layers.GRU(4, return_sequences=True)
    gru.build(x.shape)
    gru.set_weights(layer.sequence_encoder.get_weights())
    hidden = gru(x, mask=mask).numpy()
    kernel = layer.score_dense.kernel.numpy().astype(np.float64)
    expected = _np_pool(_np_attention(hidden, kernel, mask), hidden)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_fully_padded_video_gives_zeros(rng):
    layer = AttentionClusters(num_clusters=2)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    out = layer(x, mask=_mask([4, 0], 4)).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[1], 0.0)


def test_mixed_bfloat16_keeps_softmax_in_float32(rng):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = AttentionClusters(num_clusters=3, encoder="gru", encoder_units=4)
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    out, weights = layer(x, mask=_mask([6, 2], 6), return_attention=True)
    assert out.dtype == tf.bfloat16
    assert weights.dtype == tf.float32
    # bfloat16 has 8 mantissa bits: a bfloat16 softmax would miss this.
    np.testing.assert_allclose(np.sum(weights.numpy(), axis=-1), 1.0, atol=1e-6)


def test_layer_contract(rng):
    # Masking invariance with a GRU: padded frames must not reach its state.
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    run_layer_test(
        AttentionClusters,
        {"num_clusters": 3, "encoder": "gru", "encoder_units": 6},
        x,
        mask=_mask([5, 3], 5),
        expected_output_shape=(2, 3 * 6),
        run_masking_invariance=True,
    )


def test_bad_arguments_raise_config_error():
    for kwargs, message in [
        ({"num_clusters": 0}, "num_clusters must be a positive int; got 0"),
        ({"encoder": "rnn"}, "encoder must be None, 'gru' or 'lstm'; got 'rnn'"),
        ({"encoder_units": 2.5}, "encoder_units must be a positive int or None; got 2.5"),
    ]:
        with pytest.raises(ConfigError, match=message):
            AttentionClusters(**kwargs)


# ---- CrossModalAttentionClusters -----------------------------------------


def _pair(rng, steps=6, lengths=(6, 4), dims=(5, 3)):
    video = rng.normal(size=(2, steps, dims[0])).astype("float32")
    audio = rng.normal(size=(2, steps, dims[1])).astype("float32")
    return video, audio, _mask(lengths, steps)


def _np_cross_modal(layer, video, audio, mask, correlation):
    """float64 re-derivation of c_v = Σ (α_v + g·ReLU(F_a(α_a))) h_v and c_a."""
    alpha_v = _np_attention(video, layer.video_attention.score_dense.kernel.numpy(), mask)
    alpha_a = _np_attention(audio, layer.audio_attention.score_dense.kernel.numpy(), mask)

    def transform(f, alpha):
        kernel, bias = (w.astype(np.float64) for w in f.get_weights())
        if kernel.ndim == 2:
            kernel = kernel[None]
        cross = np.maximum(_np_conv_same(alpha.transpose(0, 2, 1), kernel, bias), 0.0)
        gate = np.reshape(correlation, (-1, 1, 1))
        return cross.transpose(0, 2, 1) * mask[:, None, :] * gate

    w_v = alpha_v + transform(layer.audio_to_video, alpha_a)
    w_a = alpha_a + transform(layer.video_to_audio, alpha_v)
    return np.concatenate([_np_pool(w_v, video), _np_pool(w_a, audio)], axis=-1)


@pytest.mark.parametrize("transform", ["conv", "dense"])
def test_cross_modal_values_match_numpy(rng, transform):
    layer = CrossModalAttentionClusters(
        video_clusters=3, audio_clusters=2, transform=transform, transform_kernel_size=3
    )
    video, audio, mask = _pair(rng)
    correlation = np.array([[1.0], [0.5]], "float32")
    out = layer((video, audio), mask=(mask, mask), correlation=correlation)
    assert tuple(out.shape) == (2, 3 * 5 + 2 * 3)
    expected = _np_cross_modal(layer, video, audio, mask, correlation[:, 0])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_zero_correlation_equals_independent_clusters(rng):
    layer = CrossModalAttentionClusters(
        video_clusters=3, audio_clusters=2, encoder="gru", encoder_units=4
    )
    video, audio, mask = _pair(rng)
    out = layer((video, audio), mask=(mask, mask), correlation=np.zeros(2, "float32"))
    singles = []
    for source, x in ((layer.video_attention, video), (layer.audio_attention, audio)):
        single = AttentionClusters(source.num_clusters, encoder="gru", encoder_units=4)
        single.build(x.shape)
        single.set_weights(source.get_weights())
        singles.append(single(x, mask=mask).numpy())
    np.testing.assert_allclose(out.numpy(), np.concatenate(singles, -1), atol=1e-6)
    # And the cross-modal term is not a no-op when the gate is open.
    gated = layer((video, audio), mask=(mask, mask)).numpy()
    assert np.max(np.abs(gated - out.numpy())) > 1e-3


@pytest.mark.parametrize("transform", ["conv", "dense"])
def test_gradient_reaches_transform(rng, transform):
    layer = CrossModalAttentionClusters(video_clusters=3, audio_clusters=2, transform=transform)
    video, audio, mask = _pair(rng)
    probe = rng.normal(size=(2, 3 * 5 + 2 * 3)).astype("float32")

    def transform_grads(correlation):
        with tf.GradientTape() as tape:
            out = layer((video, audio), mask=(mask, mask), correlation=correlation)
            loss = tf.reduce_sum(out * probe)
        variables = layer.audio_to_video.trainable_weights + layer.video_to_audio.trainable_weights
        return [g.numpy() for g in tape.gradient(loss, variables)]

    open_grads = transform_grads(np.ones(2, "float32"))
    assert sum(np.abs(g).sum() for g in open_grads) > 1e-4
    closed_grads = transform_grads(np.zeros(2, "float32"))
    assert sum(np.abs(g).sum() for g in closed_grads) == 0.0


def test_conv_transform_can_shift_attention_in_time(rng):
    clusters, steps, size = 2, 9, 5
    layer = CrossModalAttentionClusters(
        video_clusters=clusters, audio_clusters=clusters, transform_kernel_size=size
    )
    video, audio, _ = _pair(rng, steps=steps, lengths=(steps, steps))
    layer.build((video.shape, audio.shape))
    _, alpha_v = layer.video_attention(video, return_attention=True)
    _, alpha_a = layer.audio_attention(audio, return_attention=True)
    alpha_a = alpha_a.numpy()
    for shift in (1, 2, -2):
        # out[t] = x[t + j - 2], so tap j = 2 - shift delays audio by `shift` frames.
        kernel = np.zeros((size, clusters, clusters), "float32")
        kernel[(size - 1) // 2 - shift] = np.eye(clusters)
        layer.audio_to_video.set_weights([kernel, np.zeros(clusters, "float32")])
        _, (weights_v, _) = layer((video, audio), return_attention=True)
        cross = (weights_v - alpha_v).numpy()
        expected = np.zeros_like(cross)
        if shift > 0:
            expected[:, :, shift:] = alpha_a[:, :, :-shift]
        else:
            expected[:, :, :shift] = alpha_a[:, :, -shift:]
        np.testing.assert_allclose(cross, expected, atol=1e-6, err_msg=f"shift {shift}")


def test_dense_transform_masking_invariance(rng):
    # The "conv" transform is checked by run_layer_test in the contract test.
    layer = CrossModalAttentionClusters(video_clusters=3, audio_clusters=2, transform="dense")
    video, audio, mask = _pair(rng, lengths=(6, 3))
    extra = 4

    def pad(x):
        junk = rng.normal(size=(2, extra, x.shape[-1])).astype("float32") * 100.0
        return np.concatenate([x, junk], axis=1)

    longer_mask = np.concatenate([mask, np.zeros((2, extra), bool)], axis=1)
    short = layer((video, audio), mask=(mask, mask)).numpy()
    longer = layer((pad(video), pad(audio)), mask=(longer_mask, longer_mask)).numpy()
    np.testing.assert_allclose(short, longer, atol=1e-5)


def test_cross_modal_mixed_bfloat16(rng):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = CrossModalAttentionClusters(video_clusters=3, audio_clusters=2, encoder="gru")
    video, audio, mask = _pair(rng)
    out, (weights_v, weights_a) = layer(
        (video, audio), mask=(mask, mask), correlation=np.zeros(2), return_attention=True
    )
    assert out.dtype == tf.bfloat16
    assert weights_v.dtype == weights_a.dtype == tf.float32
    np.testing.assert_allclose(np.sum(weights_v.numpy(), -1), 1.0, atol=1e-6)


def test_bad_cross_modal_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="transform must be 'conv' or 'dense'; got 'fft'"):
        CrossModalAttentionClusters(transform="fft")
    with pytest.raises(ConfigError, match="audio_clusters must be a positive int; got -1"):
        CrossModalAttentionClusters(audio_clusters=-1)


def test_cross_modal_layer_contract(rng):
    video, audio, mask = _pair(rng, lengths=(6, 3))
    run_layer_test(
        CrossModalAttentionClusters,
        {"video_clusters": 3, "audio_clusters": 2, "transform": "conv",
         "transform_kernel_size": 3},
        (video, audio),
        mask=(mask, mask),
        call_kwargs={"correlation": np.array([[1.0], [0.7]], "float32")},
        expected_output_shape=(2, 3 * 5 + 2 * 3),
        run_masking_invariance=True,
    )
