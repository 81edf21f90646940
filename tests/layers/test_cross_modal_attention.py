"""Tests for CrossModalMultiHeadAttention (layers/cross_modal_attention.py) and the Transformer
encoders built on it (layers/transformer.py); they share the float64 re-derivation below."""
import numpy as np
import pytest
import tensorflow as tf

import keras

from vt_keras.errors import ConfigError
from vt_keras.layers.cross_modal_attention import CrossModalMultiHeadAttention
from vt_keras.layers.transformer import CrossModalTransformerEncoder, TransformerEncoder
from vt_keras.testing import run_layer_test

STEPS, DIMS = 6, (6, 3)


def _mask(lengths, steps=STEPS):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _pair(rng, steps=STEPS):
    video = rng.normal(size=(2, steps, DIMS[0])).astype("float32")
    audio = rng.normal(size=(2, steps, DIMS[1])).astype("float32")
    return video, audio


# ---- float64 numpy re-derivation --------------------------------------------


def _w(layer):
    return [w.astype(np.float64) for w in layer.get_weights()]


def _np_logits(heads, x):
    """[B, H, Tq, Tk] scaled dot products of one modality's heads."""
    (wq, bq), (wk, bk) = _w(heads.query_dense), _w(heads.key_dense)
    q = np.einsum("btd,dhk->bthk", x, wq) + bq
    k = np.einsum("btd,dhk->bthk", x, wk) + bk
    return np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(wq.shape[-1])


def _np_softmax(logits, key_mask):
    z = np.where(key_mask[:, None, None, :], logits, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_attend(heads, x, probs):
    (wv, bv), (wo, bo) = _w(heads.value_dense), _w(heads.output_dense)
    v = np.einsum("btd,dhk->bthk", x, wv) + bv
    return np.einsum("bqhk,hkd->bqd", np.einsum("bhqt,bthk->bqhk", probs, v), wo) + bo


def _np_depthwise_same(x, kernel, bias):
    """Per-head 2-D cross-correlation of [B, H, T, T], zero padded like 'same'."""
    size = kernel.shape[0]
    c = (size - 1) // 2
    steps = x.shape[-1]
    padded = np.pad(x, ((0, 0), (0, 0), (c, size - 1 - c), (c, size - 1 - c)))
    out = np.zeros_like(x) + bias[None, :, None, None]
    for p in range(size):
        for q in range(size):
            window = padded[:, :, p : p + steps, q : q + steps]
            out += window * kernel[p, q, :, 0][None, :, None, None]
    return out


def _np_cross_modal_mha(layer, video, audio, mask, correlation):
    video, audio = video.astype(np.float64), audio.astype(np.float64)
    logits_v = _np_logits(layer.video_heads, video)
    logits_a = _np_logits(layer.audio_heads, audio)
    pairs = (mask[:, :, None] & mask[:, None, :])[:, None]
    gate = np.reshape(correlation, (-1, 1, 1, 1))

    def cross(f, logits):
        if layer.transform == "separable":
            # The rank-1 kernel W_h[s, u] = a_h[s] b_h[u] convolved over the map, as "conv" would.
            a, b, bias = _w(f)
            kernel = np.einsum("sh,uh->suh", a, b)[..., None]
        else:
            kernel, bias = _w(f)
        return np.maximum(_np_depthwise_same(np.where(pairs, logits, 0.0), kernel, bias), 0) * gate

    probs_v = _np_softmax(logits_v + cross(layer.audio_to_video, logits_a), mask)
    probs_a = _np_softmax(logits_a + cross(layer.video_to_audio, logits_v), mask)
    return (_np_attend(layer.video_heads, video, probs_v),
            _np_attend(layer.audio_heads, audio, probs_a))


def _np_layer_norm(x, norm):
    gamma, beta = _w(norm)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _np_block(block, x, attended):
    (w1, b1), (w2, b2) = _w(block.intermediate_dense), _w(block.output_dense)
    h = _np_layer_norm(x + attended, block.attention_norm)
    return _np_layer_norm(h + np.maximum(h @ w1 + b1, 0.0) @ w2 + b2, block.output_norm)


# ---- CrossModalMultiHeadAttention -------------------------------------------


def test_zero_correlation_is_plain_masked_self_attention(rng):
    layer = CrossModalMultiHeadAttention(num_heads=2, key_dim=4)
    video, audio = _pair(rng)
    mask = _mask([6, 4])
    out_v, out_a = layer((video, audio), mask=(mask, mask), correlation=np.zeros(2, "float32"))
    for heads, x, out in ((layer.video_heads, video, out_v), (layer.audio_heads, audio, out_a)):
        x = x.astype(np.float64)
        expected = _np_attend(heads, x, _np_softmax(_np_logits(heads, x), mask))
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("transform", ["conv", "dense", "separable"])
def test_cross_modal_values_match_numpy(rng, transform):
    layer = CrossModalMultiHeadAttention(num_heads=2, key_dim=4, transform=transform)
    if transform == "separable":
        # A non-zero bias, so that its place (added to every pair, before the ReLU) is checked too.
        layer.build(tuple(x.shape for x in _pair(rng)))
        for f in (layer.audio_to_video, layer.video_to_audio):
            a, b, _ = f.get_weights()
            f.set_weights([a, b, np.array([0.3, -0.2], "float32")])
    video, audio = _pair(rng)
    mask = _mask([6, 4])
    correlation = np.array([[1.0], [0.5]], "float32")
    out_v, out_a = layer((video, audio), mask=(mask, mask), correlation=correlation)
    exp_v, exp_a = _np_cross_modal_mha(layer, video, audio, mask, correlation[:, 0])
    np.testing.assert_allclose(out_v.numpy(), exp_v, atol=1e-5)
    np.testing.assert_allclose(out_a.numpy(), exp_a, atol=1e-5)
    # Without the gate the transform must change the result.
    ungated_v, _ = layer((video, audio), mask=(mask, mask))
    zero_v, _ = layer((video, audio), mask=(mask, mask), correlation=np.zeros(2, "float32"))
    assert np.max(np.abs(ungated_v.numpy() - zero_v.numpy())) > 1e-3


def test_conv_transform_can_shift_attention_in_time(rng):
    heads, size, shift = 2, 5, 2
    layer = CrossModalMultiHeadAttention(num_heads=heads, key_dim=4, transform_kernel_size=size)
    video, audio = _pair(rng, steps=8)
    layer.build((video.shape, audio.shape))
    # Video logits are 0, so its attention is softmax(ReLU(F(L_a))) alone.
    for dense in (layer.video_heads.query_dense, layer.video_heads.key_dense):
        dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    kernel = np.zeros((size, size, heads, 1), "float32")
    kernel[(size - 1) // 2 - shift, (size - 1) // 2 - shift] = 1.0
    layer.audio_to_video.set_weights([kernel, np.zeros(heads, "float32")])
    _, _, (probs_v, _) = layer((video, audio), return_attention_scores=True)
    logits_a = _np_logits(layer.audio_heads, audio.astype(np.float64))
    shifted = np.zeros_like(logits_a)
    shifted[:, :, shift:, shift:] = logits_a[:, :, :-shift, :-shift]
    expected = _np_softmax(np.maximum(shifted, 0.0), np.ones((2, 8), bool))
    np.testing.assert_allclose(probs_v.numpy(), expected, atol=1e-5)


def test_separable_transform_can_shift_attention_in_time(rng):
    """a = b = e_{c−δ}: F moves the audio logit map δ frames along both time axes (a lag)."""
    heads, size, shift = 2, 5, 2
    layer = CrossModalMultiHeadAttention(num_heads=heads, key_dim=4, transform="separable",
                                         transform_kernel_size=size)
    video, audio = _pair(rng, steps=8)
    layer.build((video.shape, audio.shape))
    for dense in (layer.video_heads.query_dense, layer.video_heads.key_dense):
        dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    impulse = np.zeros((size, heads), "float32")
    impulse[(size - 1) // 2 - shift] = 1.0
    layer.audio_to_video.set_weights([impulse, impulse, np.zeros(heads, "float32")])
    _, _, (probs_v, _) = layer((video, audio), return_attention_scores=True)
    logits_a = _np_logits(layer.audio_heads, audio.astype(np.float64))
    shifted = np.zeros_like(logits_a)
    shifted[:, :, shift:, shift:] = logits_a[:, :, :-shift, :-shift]
    expected = _np_softmax(np.maximum(shifted, 0.0), np.ones((2, 8), bool))
    np.testing.assert_allclose(probs_v.numpy(), expected, atol=1e-5)
    # And F maps a map lagged by δ back onto the unlagged one: audio delayed by δ frames
    # (zeros first), F's move of -δ, equals F = identity on the original audio where both exist.
    delayed = np.concatenate([np.zeros_like(audio[:, :shift]), audio[:, :-shift]], axis=1)
    back = np.zeros((size, heads), "float32")
    back[(size - 1) // 2 + shift] = 1.0
    layer.audio_to_video.set_weights([back, back, np.zeros(heads, "float32")])
    cross_delayed = layer._cross_term(layer.audio_to_video, *layer.audio_heads.query_key(delayed),
                                      None, None).numpy()
    identity = np.zeros((size, heads), "float32")
    identity[(size - 1) // 2] = 1.0
    layer.audio_to_video.set_weights([identity, identity, np.zeros(heads, "float32")])
    cross_original = layer._cross_term(layer.audio_to_video, *layer.audio_heads.query_key(audio),
                                       None, None).numpy()
    keep = 8 - shift
    np.testing.assert_allclose(cross_delayed[:, :, :keep, :keep], cross_original[:, :, :keep, :keep],
                               atol=1e-5)


@pytest.mark.parametrize("transform", ["conv", "dense", "separable"])
def test_gradient_reaches_transform(rng, transform):
    layer = CrossModalMultiHeadAttention(num_heads=2, key_dim=4, transform=transform)
    video, audio = _pair(rng)
    mask = _mask([6, 4])
    probes = [rng.normal(size=video.shape), rng.normal(size=audio.shape)]

    def transform_grad_norm(correlation):
        with tf.GradientTape() as tape:
            outs = layer((video, audio), mask=(mask, mask), correlation=correlation)
            loss = sum(tf.reduce_sum(o * p.astype("float32")) for o, p in zip(outs, probes))
        variables = layer.audio_to_video.trainable_weights + layer.video_to_audio.trainable_weights
        return sum(float(tf.reduce_sum(tf.abs(g))) for g in tape.gradient(loss, variables))

    assert transform_grad_norm(np.ones(2, "float32")) > 1e-4
    assert transform_grad_norm(np.zeros(2, "float32")) == 0.0


@pytest.mark.parametrize("transform", ["conv", "separable"])
def test_mha_mixed_bfloat16_keeps_softmax_in_float32(rng, transform):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = CrossModalMultiHeadAttention(num_heads=2, key_dim=4, transform=transform)
    video, audio = _pair(rng)
    mask = _mask([6, 4])
    out_v, out_a, scores = layer((video, audio), mask=(mask, mask), return_attention_scores=True)
    assert out_v.dtype == out_a.dtype == tf.bfloat16
    for probs in scores:
        assert probs.dtype == tf.float32
        np.testing.assert_allclose(np.sum(probs.numpy(), -1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(probs.numpy()[1, :, :, 4:], 0.0)


@pytest.mark.parametrize("transform", ["conv", "separable"])
def test_mha_layer_contract(rng, transform):
    video, audio = _pair(rng)
    mask = _mask([6, 3])
    run_layer_test(
        CrossModalMultiHeadAttention,
        {"num_heads": 2, "key_dim": 4, "transform": transform, "transform_kernel_size": 3},
        (video, audio),
        mask=(mask, mask),
        call_kwargs={"correlation": np.array([1.0, 0.3], "float32")},
        expected_output_shape=[(2, STEPS, DIMS[0]), (2, STEPS, DIMS[1])],
        run_masking_invariance=True,
    )


# ---- Encoders ---------------------------------------------------------------

ENCODER = {"num_layers": 2, "num_heads": 2, "key_dim": 4, "intermediate_dim": 8}


def test_transformer_encoder_matches_numpy(rng):
    # dropout > 0 checks that inference ignores it.
    encoder = TransformerEncoder(**ENCODER, dropout=0.3, pooling="mean_max")
    x = rng.normal(size=(2, STEPS, 5)).astype("float32")
    mask = _mask([6, 3])
    out, scores = encoder(x, mask=mask, return_attention_scores=True)
    h, expected_scores = x.astype(np.float64), []
    for heads, block in zip(encoder.heads, encoder.blocks):
        expected_scores.append(_np_softmax(_np_logits(heads, h), mask))
        h = _np_block(block, h, _np_attend(heads, h, expected_scores[-1]))
    valid = mask[..., None]
    mean = (h * valid).sum(1) / valid.sum(1)
    top = np.where(valid, h, -np.inf).max(1)
    np.testing.assert_allclose(out.numpy(), np.concatenate([mean, top], -1), atol=1e-5)
    np.testing.assert_allclose(encoder(x, mask=mask).numpy(), out.numpy(), atol=1e-6)
    assert len(scores) == ENCODER["num_layers"]
    for got, want in zip(scores, expected_scores):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_cross_modal_encoder_zero_correlation_equals_two_encoders(rng):
    cross = CrossModalTransformerEncoder(**ENCODER)
    video, audio = _pair(rng)
    mask = _mask([6, 4])
    out = cross((video, audio), mask=(mask, mask), correlation=np.zeros((2, 1), "float32"))
    singles = []
    for x, name in ((video, "video"), (audio, "audio")):
        single = TransformerEncoder(**ENCODER)
        single.build(x.shape)
        for i in range(ENCODER["num_layers"]):
            single.heads[i].set_weights(getattr(cross.attention_layers[i], f"{name}_heads").get_weights())
            single.blocks[i].set_weights(getattr(cross, f"{name}_blocks")[i].get_weights())
        singles.append(single(x, mask=mask).numpy())
    np.testing.assert_allclose(out.numpy(), np.concatenate(singles, -1), atol=1e-5)
    gated, scores = cross((video, audio), mask=(mask, mask), return_attention_scores=True)
    assert np.max(np.abs(gated.numpy() - out.numpy())) > 1e-4
    # Each layer's scores are what its CrossModalMultiHeadAttention computes on that layer's inputs.
    v, a = video, audio
    for attention, video_block, audio_block, (probs_v, probs_a) in zip(
            cross.attention_layers, cross.video_blocks, cross.audio_blocks, scores):
        out_v, out_a, (want_v, want_a) = attention((v, a), mask=(mask, mask), return_attention_scores=True)
        np.testing.assert_allclose(probs_v.numpy(), want_v.numpy(), atol=1e-6)
        np.testing.assert_allclose(probs_a.numpy(), want_a.numpy(), atol=1e-6)
        v, a = video_block(v, out_v), audio_block(a, out_a)


def test_transformer_encoder_contract(rng):
    x = rng.normal(size=(2, STEPS, 5)).astype("float32")
    run_layer_test(
        TransformerEncoder,
        dict(ENCODER, num_layers=1, dropout=0.1, pooling="mean"),
        x,
        mask=_mask([6, 3]),
        expected_output_shape=(2, 5),
        run_masking_invariance=True,
    )


def test_cross_modal_encoder_contract(rng):
    video, audio = _pair(rng)
    mask = _mask([6, 3])
    run_layer_test(
        CrossModalTransformerEncoder,
        dict(ENCODER, num_layers=1, dropout=0.1, pooling="mean_max", transform="separable"),
        (video, audio),
        mask=(mask, mask),
        call_kwargs={"correlation": np.array([[1.0], [0.6]], "float32")},
        expected_output_shape=(2, 2 * DIMS[0] + 2 * DIMS[1]),
        run_masking_invariance=True,
    )


def test_bad_arguments_raise_clear_errors(rng):
    cases = [
        (CrossModalMultiHeadAttention, {"transform": "fft"},
         r"transform must be one of \('conv', 'dense', 'separable'\); got 'fft'"),
        (CrossModalMultiHeadAttention, {"num_heads": 0}, "num_heads must be a positive int; got 0"),
        (TransformerEncoder, {"pooling": "sum"}, "pooling must be one of .*; got 'sum'"),
        (CrossModalTransformerEncoder, {"dropout": 1.0}, r"dropout must be a float in \[0, 1\); got 1.0"),
    ]
    for cls, kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            cls(**kwargs)
