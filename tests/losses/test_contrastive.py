"""Tests of the symmetric InfoNCE loss."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.losses.replicas import mirrored_loss_and_grads, mirrored_strategy, single_device_loss_and_grads
from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.contrastive import InfoNCELoss, info_nce

# The CrossCLR tests' example embeddings. The worked values below (symmetric CLIP InfoNCE at
# τ = 0.10 and 0.03) are derived by reference_info_nce, float64 loops from the definition,
# which test_worked_values checks first.
VIDEO = np.array([[1, 0, 0.5], [0, 1, 0.2], [1, 1, 0], [0.3, -0.5, 1]])
TEXT = np.array([[0.9, 0.1, 0.4], [0.2, 1, 0], [1, 0.8, -0.2], [0, -0.4, 1.1]])


def reference_info_nce(video, text, temperature, normalize=True):
    """float64 loops straight from the definition."""
    if normalize:
        video = video / np.linalg.norm(video, axis=1, keepdims=True)
        text = text / np.linalg.norm(text, axis=1, keepdims=True)
    n = len(video)
    total = 0.0
    for i in range(n):
        row = [video[i] @ text[j] / temperature for j in range(n)]
        col = [video[j] @ text[i] / temperature for j in range(n)]
        total += -np.log(np.exp(row[i]) / np.sum(np.exp(row)))
        total += -np.log(np.exp(col[i]) / np.sum(np.exp(col)))
    return total / (2 * n)


@pytest.mark.parametrize("temperature, expected", [(0.10, 0.0849418967), (0.03, 0.0025286481)])
def test_worked_values(temperature, expected):
    # 8 significant digits are kept: half a unit of the last one.
    assert reference_info_nce(VIDEO, TEXT, temperature) == pytest.approx(expected, abs=6e-11)
    assert float(info_nce(VIDEO, TEXT, temperature)) == pytest.approx(expected, abs=6e-11)
    value32 = float(info_nce(VIDEO.astype("float32"), TEXT.astype("float32"), temperature))
    # The softplus form keeps float32 precise even for a loss of 2.5e-3.
    assert value32 == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_matches_reference_on_random_batches(rng, normalize):
    video = rng.normal(size=(7, 5))
    text = video + 0.5 * rng.normal(size=(7, 5))
    scale = 1.0 if normalize else 0.3
    expected = reference_info_nce(scale * video, scale * text, 0.2, normalize)
    got = info_nce(scale * video, scale * text, temperature=0.2, normalize=normalize)
    assert float(got) == pytest.approx(expected, rel=1e-10)
    got32 = info_nce((scale * video).astype("float32"), (scale * text).astype("float32"), 0.2, normalize=normalize)
    assert got32.dtype == "float32"
    assert float(got32) == pytest.approx(expected, rel=1e-5)


def test_half_precision_inputs_compute_in_float32(rng):
    video = rng.normal(size=(6, 8)).astype("float16")
    text = rng.normal(size=(6, 8)).astype("float16")
    got = info_nce(video, text, 0.05)
    assert got.dtype == "float32"
    expected = reference_info_nce(video.astype("float64"), text.astype("float64"), 0.05)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_gradients_finite_for_zero_rows_and_tiny_temperature():
    video = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    with tf.GradientTape() as tape:
        tape.watch([video, text])
        loss = info_nce(video, text, temperature=1e-3)
    grads = tape.gradient(loss, [video, text])
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="temperature must be a number > 0; got 0"):
        info_nce(VIDEO, TEXT, temperature=0)
    with pytest.raises(UserError, match="same batch size; got 4 and 3"):
        info_nce(VIDEO, TEXT[:3])
    with pytest.raises(UserError, match="same embedding width; got 3 and 2"):
        info_nce(VIDEO, TEXT[:, :2])
    with pytest.raises(UserError, match=r"shape \[B, d\]"):
        info_nce(VIDEO[None], TEXT)
    with pytest.raises(UserError, match="missing \\['text'\\]"):
        InfoNCELoss()(0.0, {"video": VIDEO})


def test_keras_loss_wrapper_and_serialization():
    loss = InfoNCELoss(temperature=0.1, name="nce")
    assert float(loss(0.0, {"video": VIDEO, "text": TEXT})) == pytest.approx(0.0849418967, rel=1e-5)
    assert float(loss(0.0, (VIDEO, TEXT))) == pytest.approx(0.0849418967, rel=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, InfoNCELoss)
    assert restored.get_config() == loss.get_config()
    assert restored.get_config()["temperature"] == 0.1


def test_two_replicas_match_one_device(rng, logical_cpus):
    video = rng.normal(size=(6, 5)).astype("float32")
    text = (video + 0.3 * rng.normal(size=(6, 5))).astype("float32")
    weights = rng.normal(size=(5, 4)).astype("float32")
    fn = lambda v, t, gather=None: info_nce(v, t, temperature=0.1, gather=gather)  # noqa: E731
    strategy = mirrored_strategy(logical_cpus)
    losses, grad = mirrored_loss_and_grads(strategy, fn, [video, text], weights)
    loss, expected_grad = single_device_loss_and_grads(fn, [video, text], weights)
    assert losses == pytest.approx([loss, loss], rel=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)
    # Each replica alone would see only 3 pairs and a different loss.
    assert float(fn(tf.constant(video[:3]) @ weights, tf.constant(text[:3]) @ weights)) != pytest.approx(loss)
