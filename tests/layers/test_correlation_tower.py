"""Tests of CorrelationTower, its weighted loss and its metrics."""
import keras
import numpy as np
import pytest

from vt_keras.errors import ConfigError, ShapeError, UserError
from vt_keras.layers.correlation_tower import (
    CorrelationTower,
    WeightedBinaryCrossentropy,
    correlation_metrics,
    weighted_binary_crossentropy,
)
from vt_keras.testing import run_layer_test

SHAPES = {"probability": (4,), "video_embedding": (4, 3), "audio_embedding": (4, 3),
          "embedding": (4, 6)}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _stack_ref(layers, x, final_linear=True):
    h = x.astype(np.float64)
    for i, layer in enumerate(layers):
        h = h @ layer.kernel.numpy() + layer.bias.numpy()
        if i < len(layers) - 1 or not final_linear:
            h = np.maximum(h, 0.0)
    return h


def _tower_ref(tower, video, audio):
    e_v = _stack_ref(tower.video_layers, video)
    e_a = _stack_ref(tower.audio_layers, audio)
    z = np.concatenate([e_v, e_a, e_v * e_a], -1) @ tower.classifier.kernel.numpy()
    z = z[:, 0] + tower.classifier.bias.numpy()[0]
    return 1.0 / (1.0 + np.exp(-z)), e_v, e_a


def test_layer_contract_on_pooled_features(rng):
    video = rng.normal(size=(4, 6)).astype("float32")
    audio = rng.normal(size=(4, 2)).astype("float32")
    run_layer_test(CorrelationTower, {"hidden_units": (5, 4), "embedding_dim": 3},
                   (video, audio), expected_output_shape=SHAPES)


def test_layer_contract_on_masked_frames(rng):
    video = rng.normal(size=(4, 5, 6)).astype("float32")
    audio = rng.normal(size=(4, 5, 2)).astype("float32")
    mask = np.ones((4, 5), bool)
    mask[0, 2:] = False
    mask[3, 1:] = False
    run_layer_test(CorrelationTower, {"hidden_units": [5], "embedding_dim": 3, "dropout": 0.2},
                   (video, audio), mask=(mask, mask), expected_output_shape=SHAPES,
                   run_masking_invariance=True)


def test_matches_numpy_and_pools_frames_over_the_mask(rng):
    tower = CorrelationTower(hidden_units=(5, 4), embedding_dim=3)
    video = rng.normal(size=(4, 5, 6)).astype("float32")
    audio = rng.normal(size=(4, 5, 2)).astype("float32")
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    tower.build(((None, 6), (None, 2)))
    for w in tower.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)

    def pool(x):
        return np.stack([xi[mi].mean(0) for xi, mi in zip(x.astype(np.float64), mask)])

    p, e_v, e_a = _tower_ref(tower, pool(video), pool(audio))
    out = tower((video, audio), mask=(mask, mask))
    np.testing.assert_allclose(_np(out["probability"]), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out["video_embedding"]), e_v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(out["audio_embedding"]), e_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(out["embedding"]), np.concatenate([e_v, e_a], -1),
                               rtol=1e-5, atol=1e-5)


def test_mixed_precision_probability_is_float32(rng):
    tower = CorrelationTower(hidden_units=(4,), embedding_dim=2, dtype="mixed_bfloat16")
    out = tower((rng.normal(size=(3, 5)).astype("float32"),
                 rng.normal(size=(3, 2)).astype("float32")))
    assert keras.backend.standardize_dtype(out["probability"].dtype) == "float32"
    assert keras.backend.standardize_dtype(out["embedding"].dtype) == "bfloat16"


@pytest.mark.slow
def test_learns_to_detect_matching_tracks(rng):
    """Positives: audio is a rotation of the video features; negatives: shuffled.

    Needs the e_v ⊙ e_a interaction: a read-out of [e_v, e_a] alone is
    f(v) + g(a), which cannot tell matched from shuffled pairs.
    """
    n, dv, da = 1024, 4, 4
    video = rng.normal(size=(n, dv)).astype("float32")
    audio = (video @ np.linalg.qr(rng.normal(size=(dv, da)))[0]).astype("float32")
    labels = (rng.uniform(size=n) < 0.5).astype("float32")
    audio = np.where(labels[:, None] == 1, audio, audio[rng.permutation(n)])
    v_in, a_in = keras.Input((dv,)), keras.Input((da,))
    tower = CorrelationTower(hidden_units=(16,), embedding_dim=16)
    model = keras.Model([v_in, a_in], tower((v_in, a_in))["probability"])
    model.compile(keras.optimizers.Adam(2e-2), WeightedBinaryCrossentropy(negative_weight=2.0))
    model.fit([video[:768], audio[:768]], labels[:768], batch_size=128, epochs=15, verbose=0)
    p = model.predict([video[768:], audio[768:]], batch_size=256, verbose=0)
    metrics = correlation_metrics(labels[768:], p)
    assert metrics["accuracy"] > 0.85, metrics


def test_weighted_binary_crossentropy_matches_numpy():
    y = np.array([1, 0, 1, 0, 1], "float32")
    p = np.array([0.9, 0.2, 0.3, 0.99, 0.5], "float32")
    expected = -(y * np.log(p.astype(np.float64))
                 + 2.0 * (1 - y) * np.log(1 - p.astype(np.float64)))
    np.testing.assert_allclose(_np(weighted_binary_crossentropy(y, p)), expected, rtol=1e-5)
    # Worked values from the docstring.
    np.testing.assert_allclose(_np(weighted_binary_crossentropy([1.0, 0.0], [0.9, 0.2])),
                               [-np.log(0.9), -2 * np.log(0.8)], rtol=1e-5)
    # Weight 1 is plain binary cross-entropy.
    plain = keras.losses.binary_crossentropy(y[:, None], p[:, None])
    np.testing.assert_allclose(_np(weighted_binary_crossentropy(y, p, negative_weight=1.0)),
                               _np(plain), rtol=1e-4)
    # [B, 1] inputs and saturated probabilities stay finite.
    sat = weighted_binary_crossentropy(np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]]))
    assert _np(sat).shape == (2,) and np.all(np.isfinite(_np(sat)))


def test_loss_class_reduces_and_serializes():
    loss = WeightedBinaryCrossentropy(negative_weight=3.0)
    y = np.array([1.0, 0.0, 0.0])
    p = np.array([0.8, 0.4, 0.1])
    expected = np.mean(-np.array([np.log(0.8), 3 * np.log(0.6), 3 * np.log(0.9)]))
    np.testing.assert_allclose(float(loss(y, p)), expected, rtol=1e-5)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(revived, WeightedBinaryCrossentropy) and revived.negative_weight == 3.0


def test_correlation_metrics_worked_example():
    m = correlation_metrics([1, 1, 1, 0, 0], [0.9, 0.4, 0.6, 0.7, 0.1])
    assert m == pytest.approx({"accuracy": 3 / 5, "false_positive_rate": 1 / 2,
                               "false_negative_rate": 1 / 3})
    m = correlation_metrics([1, 1], [0.9, 0.4], threshold=0.3)
    assert m["accuracy"] == 1.0 and m["false_negative_rate"] == 0.0
    assert np.isnan(m["false_positive_rate"])  # no negatives to rate


def test_correlation_metrics_rejects_bad_inputs():
    with pytest.raises(ShapeError, match="y_true has 3 labels but p has 2"):
        correlation_metrics([1, 0, 1], [0.5, 0.5])
    with pytest.raises(UserError, match="y_true must be 0/1 labels"):
        correlation_metrics([1, 2], [0.5, 0.5])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"hidden_units": (4, 0)}, "hidden_units must be positive"),
     ({"embedding_dim": 0}, "embedding_dim must be >= 1, got 0"),
     ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0")],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CorrelationTower(**kwargs)
