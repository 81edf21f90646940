"""What the backend tests run, written once for every backend: layer cases, loss cases, a model.

Plain numpy and `keras.ops`: imported both by the TensorFlow test process and
by the worker processes that run under `KERAS_BACKEND=jax` or `torch`.
"""
import numpy as np
from keras import ops

from vt_keras import layers, losses
from vt_keras.layers.correlation_tower import weighted_binary_crossentropy


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mask(lengths, steps):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _frames(seed, batch, steps, dim):
    return _rng(seed).normal(size=(batch, steps, dim)).astype("float32")


# (name, class, init kwargs, inputs, mask, call kwargs, expected output shape, run_layer_test options)
def layer_cases():
    """The `run_layer_test` case of every public layer, small enough for seconds per backend."""
    video, audio = _frames(1, 2, 5, 6), _frames(2, 2, 5, 3)
    mask = _mask([5, 3], 5)
    correlation = np.array([[1.0], [0.6]], "float32")
    encoder = dict(num_layers=1, num_heads=2, key_dim=4, intermediate_dim=8, dropout=0.1)
    return [
        ("FramePooling", layers.FramePooling, {"mode": "mean_max"}, video, mask, None, (2, 12),
         dict(run_masking_invariance=True)),
        ("FrameEmbedding", layers.FrameEmbedding, {"units": 4}, video, mask, {"context": audio[:, 0]}, (2, 5, 4), {}),
        ("NetVLAD", layers.NetVLAD, {"num_clusters": 3}, video, mask, None, (2, 18),
         dict(run_masking_invariance=True)),
        # F is ReLU dense layers on non-negative assignments, biases 0 at init: a unit whose
        # weights on the active inputs are all negative starts dead. One layer of 4 units
        # over 4 assignments is all dead with probability (1/2^4)^4 = 1.5e-5 per init; a
        # hidden layer makes a dead output layer likely (it happened on one backend).
        ("CrossModalNetVLAD", layers.CrossModalNetVLAD,
         {"video_clusters": 4, "audio_clusters": 4, "transform_units": None}, (video, audio), (mask, mask),
         {"correlation": correlation[:, 0]}, (2, 4 * 6 + 4 * 3), dict(run_masking_invariance=True)),
        ("CrossModalNetVLAD/temporal", layers.CrossModalNetVLAD,
         {"video_clusters": 4, "audio_clusters": 4, "transform_units": None, "transform_kernel_size": 3},
         (video, audio), (mask, mask), {"correlation": correlation[:, 0]}, (2, 4 * 6 + 4 * 3),
         dict(run_masking_invariance=True)),
        ("AttentionClusters", layers.AttentionClusters, {"num_clusters": 3, "encoder": "gru", "encoder_units": 4},
         video, mask, None, (2, 12), dict(run_masking_invariance=True)),
        ("CrossModalAttentionClusters", layers.CrossModalAttentionClusters,
         {"video_clusters": 3, "audio_clusters": 2, "transform": "conv", "transform_kernel_size": 3},
         (video, audio), (mask, mask), {"correlation": correlation}, (2, 3 * 6 + 2 * 3),
         dict(run_masking_invariance=True)),
        ("CrossModalMultiHeadAttention", layers.CrossModalMultiHeadAttention,
         {"num_heads": 2, "key_dim": 4, "transform": "conv", "transform_kernel_size": 3}, (video, audio),
         (mask, mask), {"correlation": correlation[:, 0]}, [(2, 5, 6), (2, 5, 3)],
         dict(run_masking_invariance=True)),
        ("CrossModalMultiHeadAttention/separable", layers.CrossModalMultiHeadAttention,
         {"num_heads": 2, "key_dim": 4, "transform": "separable", "transform_kernel_size": 3}, (video, audio),
         (mask, mask), {"correlation": correlation[:, 0]}, [(2, 5, 6), (2, 5, 3)],
         dict(run_masking_invariance=True)),
        ("TransformerEncoder", layers.TransformerEncoder, dict(encoder, pooling="mean"), video, mask, None,
         (2, 6), dict(run_masking_invariance=True)),
        ("CrossModalTransformerEncoder", layers.CrossModalTransformerEncoder,
         dict(encoder, pooling="mean_max", transform="separable"), (video, audio), (mask, mask),
         {"correlation": correlation}, (2, 18), dict(run_masking_invariance=True)),
        ("CorrelationTower", layers.CorrelationTower, {"hidden_units": [5], "embedding_dim": 3}, (video, audio),
         (mask, mask), None,
         {"probability": (2,), "video_embedding": (2, 3), "audio_embedding": (2, 3), "embedding": (2, 6)},
         dict(run_masking_invariance=True)),
        ("MixtureOfExperts", layers.MixtureOfExperts, {"num_classes": 5, "num_mixtures": 2, "l2_penalty": 1e-6},
         video[:, 0], None, None, (2, 5), {}),
        ("ContextGating", layers.ContextGating, {"use_batch_norm": True}, video, mask, None, (2, 5, 6),
         dict(run_masking_invariance=True)),
        ("CKAAlignment", layers.CKAAlignment, {"weight": 0.2, "kernel": "rbf", "seed": 3}, (video, audio),
         (mask, mask), None, [(2, 5, 6), (2, 5, 3)], dict(run_training=False)),
    ]


# ---- losses: name → (function of float tensors returning a scalar, its float inputs)

def loss_cases():
    """Every public loss as a scalar function of its float inputs, for values and gradients."""
    rng = _rng(7)

    def normal(*shape):
        return rng.normal(size=shape).astype("float32")

    video, text = normal(6, 4), normal(6, 4)
    video_feat, text_feat = rng.uniform(size=(6, 3)).astype("float32"), rng.uniform(size=(6, 5)).astype("float32")
    clips, captions = normal(3, 4, 5), normal(3, 3, 5)
    clip_mask = _mask([4, 2, 3], 4)
    cost = normal(3, 6, 5)
    lengths = (np.array([6, 3, 4]), np.array([5, 5, 2]))
    series_x, series_y = normal(2, 5, 2), normal(2, 4, 2)
    labels = np.array([1, 0, 1, 0, 0, 1], "float32")

    queue_loss = losses.CrossCLRLoss(temperature=0.1, queue_size=8)
    queue_loss.build(4, 4, 3, 5)

    def queue_two_steps(v, t, vf, tf_):
        # The second step sees the first as queue negatives; stateless, so JAX can compile it.
        state = [x.value for x in queue_loss.queue.non_trainable_variables]
        first, state = queue_loss.stateless_compute(state, v[:3], t[:3], vf[:3], tf_[:3])
        second, _ = queue_loss.stateless_compute(state, v[3:], t[3:], vf[3:], tf_[3:])
        return first + second

    return {
        "info_nce": (lambda v, t: losses.info_nce(v, t, temperature=0.1), [video, text]),
        "cka_linear": (lambda x, y: losses.cka(x, y), [video, video_feat]),
        "cka_rbf_debiased": (lambda x, y: losses.cka(x, y, kernel="rbf", debiased=True), [video, text_feat]),
        "crossclr_paper": (lambda v, t, vf, tf_: losses.crossclr_loss(v, t, vf, tf_, temperature=0.1),
                           [video, text, video_feat, text_feat]),
        "crossclr_released_code": (
            lambda v, t, vf, tf_: losses.crossclr_loss(v, t, vf, tf_, temperature=0.1, reference_compat=True,
                                                       num_positives=2, positive_weight=0.2),
            [video, text, video_feat, text_feat]),
        "crossclr_queue": (queue_two_steps, [video, text, video_feat, text_feat]),
        "soft_dtw": (lambda c: ops.sum(ops.multiply(losses.soft_dtw(c, 0.1, row_lengths=lengths[0],
                                                                   col_lengths=lengths[1], bandwidth=3),
                                                   np.array([1.0, 2.0, 3.0], "float32"))),
                     [cost]),
        "soft_dtw_divergence": (lambda x, y: ops.sum(losses.soft_dtw_divergence(x, y, gamma=0.5)),
                                [series_x, series_y]),
        "vt_twins": (lambda v, t: losses.vt_twins_loss(v, t, video_mask=clip_mask, temperature=0.5,
                                                       symmetric=True), [clips, captions]),
        "vt_twins_length_normalized": (
            lambda v, t: losses.vt_twins_loss(v, t, video_mask=clip_mask, temperature=0.5, symmetric=True,
                                              length_normalize=True), [clips, captions]),
        "weighted_binary_crossentropy": (
            lambda p: ops.mean(weighted_binary_crossentropy(labels, ops.sigmoid(p))), [normal(6)]),
    }


# ---- a classifier from CrossModalNetVLAD and MixtureOfExperts, to move between backends

MODEL_SHAPES = {"video": (4, 6), "audio": (4, 3)}


def model_inputs():
    rng = _rng(11)
    return [rng.normal(size=(3,) + MODEL_SHAPES[k]).astype("float32") for k in ("video", "audio")] + [
        _mask([4, 2, 3], 4)]


def build_classifier():
    """`CrossModalNetVLAD` + `ContextGating` + `MixtureOfExperts`, the README's example in small."""
    import keras

    video = keras.Input(MODEL_SHAPES["video"], name="video")
    audio = keras.Input(MODEL_SHAPES["audio"], name="audio")
    mask = keras.Input((MODEL_SHAPES["video"][0],), dtype="bool", name="mask")
    pooled = layers.CrossModalNetVLAD(video_clusters=3, audio_clusters=2, output_dim=8)(
        (video, audio), mask=(mask, mask))
    gated = layers.ContextGating()(pooled)
    probs = layers.MixtureOfExperts(num_classes=4, num_mixtures=2)(gated)
    return keras.Model([video, audio, mask], probs)
