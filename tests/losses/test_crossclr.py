"""Tests of the CrossCLR loss function (no queue)."""
import inspect

import numpy as np
import pytest
import tensorflow as tf

from tests.losses.crossclr_reference import influence, reference_crossclr
from tests.losses.replicas import mirrored_loss_and_grads, mirrored_strategy, single_device_loss_and_grads
from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.contrastive import info_nce
from vt_keras.losses.crossclr import DEFAULTS, PRESETS, crossclr_loss
from vt_keras.losses.crossclr_queue import CrossCLRLoss

# A worked example in released-code mode. Its values (0.0307381487 at τ = 0.10, 2.31566e-05 at
# τ = 0.03, λ = 0.8, κ = 0.0035, γ = 0.9) are what the authors' released code computes; their
# derivation here is tests/losses/crossclr_reference.py, a float64 loop re-implementation of that
# code, which test_released_code_worked_values checks first.
VIDEO = np.array([[1, 0, 0.5], [0, 1, 0.2], [1, 1, 0], [0.3, -0.5, 1]])
TEXT = np.array([[0.9, 0.1, 0.4], [0.2, 1, 0], [1, 0.8, -0.2], [0, -0.4, 1.1]])
VIDEO_FEAT = np.array([[1, 2], [2, 1], [1, 1], [3, 0.5]])
TEXT_FEAT = np.array([[0.5, 1, 2], [1, 1, 1], [2, 0, 1], [0.1, 0.2, 3]])
EXAMPLE = (VIDEO, TEXT, VIDEO_FEAT, TEXT_FEAT)
OPTIONS = dict(weight_temperature=0.0035, intra_weight=0.8, prune_threshold=0.9)


def _reference(inputs, temperature=0.03, compat=False, **kwargs):
    options = dict(OPTIONS, **kwargs)
    return reference_crossclr(*inputs, temperature, options["weight_temperature"], options["intra_weight"],
                              options["prune_threshold"], compat, options.get("num_positives", 0),
                              options.get("positive_weight", 0.0))


def _random_batch(rng, batch=8, dim=6, video_width=5, text_width=7):
    video = rng.normal(size=(batch, dim))
    text = video + 0.8 * rng.normal(size=(batch, dim))
    # Non-negative features (like pooled ReLU activations) give a spread of
    # positive centralities, so γ = 0.9 prunes some samples but not all.
    return video, text, rng.uniform(size=(batch, video_width)), rng.uniform(size=(batch, text_width)) ** 2


@pytest.mark.parametrize("temperature, expected", [(0.10, 0.0307381487), (0.03, 2.31566e-05)])
def test_released_code_worked_values(temperature, expected):
    decimals = 6e-11  # half a unit of the last printed digit
    assert _reference(EXAMPLE, temperature, compat=True) == pytest.approx(expected, abs=decimals)
    got = crossclr_loss(*EXAMPLE, temperature=temperature, reference_compat=True, **OPTIONS)
    assert float(got) == pytest.approx(expected, abs=decimals)
    got32 = crossclr_loss(*[x.astype("float32") for x in EXAMPLE], temperature=temperature,
                          reference_compat=True, **OPTIONS)
    assert got32.dtype == "float32"
    assert float(got32) == pytest.approx(expected, rel=2e-5)


def test_example_prunes_the_expected_samples():
    # Video centralities (1/B)·Σ_{j≠i}⟨x_i, x_j⟩ = 2.75, 3.375, 2.375, 3.5 →
    # samples 1 and 3 are influential at γ = 0.9; text 3.1875, 2.45, 2.3,
    # 3.1875 → samples 0 and 3. The reference leaves out the 1/B.
    c, infl = influence(VIDEO_FEAT, 0.9, compat=False)
    np.testing.assert_allclose(c / 4, [2.75, 3.375, 2.375, 3.5])
    assert infl.tolist() == [False, True, False, True]
    assert influence(TEXT_FEAT, 0.9, compat=False)[1].tolist() == [True, False, False, True]


@pytest.mark.parametrize("compat", [False, True])
def test_matches_float64_reference(rng, compat):
    for temperature, threshold in [(0.1, 0.9), (0.05, 0.95), (0.3, 0.8)]:
        inputs = _random_batch(rng)
        pruned = sum(influence(f, threshold, compat)[1].sum() for f in inputs[2:])
        assert 0 < pruned < 16, "the batch should exercise both pruned and kept samples"
        options = dict(OPTIONS, prune_threshold=threshold)
        expected = _reference(inputs, temperature, compat, **options)
        got = crossclr_loss(*inputs, temperature=temperature, reference_compat=compat, **options)
        assert float(got) == pytest.approx(expected, rel=1e-9)
        got32 = crossclr_loss(*[x.astype("float32") for x in inputs], temperature=temperature,
                              reference_compat=compat, **options)
        assert float(got32) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("compat", [False, True])
def test_multiple_positives_match_reference(rng, compat):
    inputs = _random_batch(rng, batch=10)
    without = float(crossclr_loss(*inputs, temperature=0.1, reference_compat=compat, **OPTIONS))
    for num_positives in (1, 2, 20):  # 20 > the number of candidates
        options = dict(OPTIONS, prune_threshold=0.8, num_positives=num_positives, positive_weight=0.15)
        expected = _reference(inputs, 0.1, compat, **options)
        got = crossclr_loss(*inputs, temperature=0.1, reference_compat=compat, **options)
        assert float(got) == pytest.approx(expected, rel=1e-9)
        assert float(got) != pytest.approx(without)


def test_reduces_to_info_nce():
    # λ = 0, no pruning (γ = 1 keeps the top sample) and uniform weights
    # (huge κ) leave exactly the symmetric InfoNCE.
    for temperature in (0.1, 0.03):
        got = crossclr_loss(*EXAMPLE, temperature=temperature, weight_temperature=1e12, intra_weight=0.0,
                            prune_threshold=1.0)
        assert float(got) == pytest.approx(float(info_nce(VIDEO, TEXT, temperature)), rel=1e-9)


def test_intra_weight_and_pruning_change_the_loss(rng):
    inputs = _random_batch(rng)
    base = float(crossclr_loss(*inputs, temperature=0.1, **OPTIONS))
    more_intra = float(crossclr_loss(*inputs, temperature=0.1, **dict(OPTIONS, intra_weight=1.0)))
    no_pruning = float(crossclr_loss(*inputs, temperature=0.1, **dict(OPTIONS, prune_threshold=2.0)))
    assert more_intra > base  # a larger λ only adds to the denominator
    assert no_pruning > base  # pruning only removes negatives


def _grads(inputs, **kwargs):
    tensors = [tf.constant(x, tf.float32) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(tensors[:2])
        loss = crossclr_loss(*tensors, **kwargs)
    return loss, tape.gradient(loss, tensors[:2])


STABILITY_CASES = {
    # κ = 0.0035 with large centralities: a naive exp(w / κ) overflows.
    "large_centralities": lambda rng: _random_batch(rng, batch=16)[:2] + (
        100 * rng.uniform(size=(16, 4)), 100 * rng.uniform(size=(16, 3))),
    "batch_of_two": lambda rng: _random_batch(rng, batch=2),
    # Anti-aligned features: every centrality is negative.
    "negative_centralities": lambda rng: _random_batch(rng, batch=2)[:2] + (
        np.array([[1.0, 2.0], [-1.0, -2.0]]), np.array([[3.0], [-1.0]])),
    "mixed_sign_sum_zero": lambda rng: _random_batch(rng, batch=3)[:2] + (
        np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), np.array([[1.0], [0.0], [0.0]])),
    # Identical features: every sample is influential and pruned.
    "all_pruned": lambda rng: _random_batch(rng, batch=5)[:2] + (np.ones((5, 3)), np.ones((5, 2))),
    "identical_embeddings": lambda rng: (np.ones((4, 3)), np.ones((4, 3)), rng.uniform(size=(4, 2)),
                                         rng.uniform(size=(4, 2))),
}


@pytest.mark.parametrize("case", sorted(STABILITY_CASES))
def test_float32_stability(rng, case):
    inputs = STABILITY_CASES[case](rng)
    for compat in (False, True):
        loss, grads = _grads(inputs, temperature=0.03, weight_temperature=0.0035, reference_compat=compat)
        assert np.isfinite(float(loss))
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
        if case in ("large_centralities", "batch_of_two", "all_pruned"):
            expected = _reference(inputs, 0.03, compat, weight_temperature=0.0035)
            assert float(loss) == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_all_pruned_paper_loss_is_zero(rng):
    inputs = STABILITY_CASES["all_pruned"](rng)
    assert float(crossclr_loss(*inputs)) == pytest.approx(0.0, abs=1e-7)


def test_half_precision_inputs(rng):
    inputs = _random_batch(rng)
    half = [x.astype("float16") for x in inputs]
    got = crossclr_loss(*half, temperature=0.1)
    assert got.dtype == "float32"
    expected = _reference([x.astype("float64") for x in half], 0.1)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="temperature must be a number > 0; got -1"):
        crossclr_loss(*EXAMPLE, temperature=-1)
    with pytest.raises(ConfigError, match="intra_weight must be a number ≥ 0"):
        crossclr_loss(*EXAMPLE, intra_weight=-0.5)
    with pytest.raises(ConfigError, match="num_positives must be an integer ≥ 0; got 1.5"):
        crossclr_loss(*EXAMPLE, num_positives=1.5)
    with pytest.raises(UserError, match="video_emb and video_features need the same batch size; got 4 and 3"):
        crossclr_loss(VIDEO, TEXT, VIDEO_FEAT[:3], TEXT_FEAT)
    with pytest.raises(UserError, match="same embedding width; got 3 and 2"):
        crossclr_loss(VIDEO, TEXT[:, :2], VIDEO_FEAT, TEXT_FEAT)


def test_two_replicas_match_one_device(rng, logical_cpus):
    video, text, video_feat, text_feat = [x.astype("float32") for x in _random_batch(rng, batch=6)]
    weights = rng.normal(size=(6, 4)).astype("float32")

    def fn(v, t, vf, tf_, gather=None):
        return crossclr_loss(v, t, vf, tf_, temperature=0.1, prune_threshold=0.85, num_positives=1,
                             positive_weight=0.2, gather=gather)

    inputs = [video, text, video_feat, text_feat]
    strategy = mirrored_strategy(logical_cpus)
    losses, grad = mirrored_loss_and_grads(strategy, fn, inputs, weights)
    loss, expected_grad = single_device_loss_and_grads(fn, inputs, weights)
    assert losses == pytest.approx([loss, loss], rel=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_one_source_of_defaults():
    # The CrossCLR supplement's Table 1 (Zolfaghari et al., ICCV 2021): LSMDC and YouCook2 choices.
    assert PRESETS["youcook2"] == dict(temperature=0.03, weight_temperature=35e-4, intra_weight=0.8,
                                       prune_threshold=0.9, queue_size=5000)
    assert PRESETS["lsmdc"] == dict(temperature=0.03, weight_temperature=55e-4, intra_weight=0.65,
                                    prune_threshold=0.9, queue_size=3000)
    # The function and the Loss take their defaults from DEFAULTS, which is YouCook2 without a queue.
    assert DEFAULTS == dict(temperature=0.03, weight_temperature=35e-4, intra_weight=0.8, prune_threshold=0.9,
                            reference_compat=False, num_positives=0, positive_weight=0.0)
    for fn in (crossclr_loss, CrossCLRLoss):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in DEFAULTS} == DEFAULTS, fn.__name__
    assert inspect.signature(CrossCLRLoss).parameters["queue_size"].default == 0
