"""VT-TWINS loss against an independent float64 numpy re-implementation of the released code."""
import itertools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from vt_keras.distributed import replica_gather
from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.temporal_augment import local_permutations, temporal_augment
from vt_keras.losses.vt_twins import (
    VTTwinsLoss,
    local_neighborhood_smoothing,
    vt_twins_loss,
    weak_alignment_matrix,
)

# One shape for the soft-DTW kernel (XLA compiles per shape): B = 4 videos of
# N = 4 clips and M = 3 captions → 16 weak-alignment matrices of 9 × 7.
B, N, M, D = 4, 4, 3, 5


# ------------------------------------------------------------ numpy reference
def _softmin(values, gamma):
    values = np.asarray(values, dtype=np.float64)
    low = values.min()
    return low - gamma * np.log(np.exp(-(values - low) / gamma).sum())


def _smooth(cost, gamma):
    n, m = cost.shape
    out = np.empty_like(cost)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                neighbours = [0.0, 0.0, 0.0]
            else:
                neighbours = [
                    cost[i, j - 1] if j > 0 else np.inf,
                    cost[i - 1, j] if i > 0 else np.inf,
                    cost[i - 1, j - 1] if i > 0 and j > 0 else np.inf,
                ]
            out[i, j] = cost[i, j] + _softmin(neighbours, gamma)
    return out


def _weak(smoothed, theta):
    n, m = smoothed.shape
    w = np.full((2 * n + 1, 2 * m + 1), theta)
    w[1::2, 1::2] = smoothed
    return w


def _sdtw(cost, gamma):
    n, m = cost.shape
    r = np.full((n + 1, m + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r[i, j] = cost[i - 1, j - 1] + _softmin([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]], gamma)
    return r[n, m]


def _reference_loss(video, text, video_mask=None, text_mask=None, gamma=0.1, theta=0.5, tau=1.0, symmetric=False,
                    length_normalize=False):
    """The released code's loss, written from its description, in float64 (the normalisation: ours)."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    videos = [unit(v if video_mask is None else v[mk]) for v, mk in zip(video, video_mask if video_mask is not None else video)]
    texts = [unit(t if text_mask is None else t[mk]) for t, mk in zip(text, text_mask if text_mask is not None else text)]
    g = len(videos)
    s = np.array([[_sdtw(_weak(_smooth(-videos[q] @ texts[p].T, gamma), theta), gamma) for q in range(g)] for p in range(g)])
    if length_normalize:
        s = s / np.array([[len(videos[q]) + len(texts[p]) for q in range(g)] for p in range(g)])
    logits = -s / tau

    def lse(a, axis):
        top = a.max(axis=axis, keepdims=True)
        return (np.log(np.exp(a - top).sum(axis=axis, keepdims=True)) + top).squeeze(axis)

    loss = np.mean(lse(logits, 1) - np.diag(logits))
    if symmetric:
        loss = 0.5 * (loss + np.mean(lse(logits, 0) - np.diag(logits)))
    return loss


@pytest.fixture
def embeddings(rng):
    return rng.normal(size=(B, N, D)), rng.normal(size=(B, M, D))


# ----------------------------------------------------------------------- tests
def test_matches_released_code_at_temperature_one(embeddings):
    video, text = embeddings
    got = vt_twins_loss(video, text, temperature=1.0).numpy()
    np.testing.assert_allclose(got, _reference_loss(video, text), rtol=1e-12)


@pytest.mark.parametrize("tau, symmetric, gamma, theta", [(0.02, False, 0.1, 0.5), (0.3, True, 0.5, 0.2)])
def test_temperature_and_symmetric_variants(embeddings, tau, symmetric, gamma, theta):
    video, text = embeddings
    got = vt_twins_loss(video, text, gamma=gamma, theta=theta, temperature=tau, symmetric=symmetric).numpy()
    want = _reference_loss(video, text, gamma=gamma, theta=theta, tau=tau, symmetric=symmetric)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_float32_inputs_give_float32_loss(embeddings):
    video, text = embeddings
    got = vt_twins_loss(video.astype(np.float32), text.astype(np.float32), temperature=1.0)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), _reference_loss(video, text), rtol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradient_matches_finite_differences(embeddings, rng, symmetric):
    video, text = (tf.constant(x) for x in embeddings)
    kwargs = dict(temperature=0.1, symmetric=symmetric)
    with tf.GradientTape() as tape:
        tape.watch([video, text])
        loss = vt_twins_loss(video, text, **kwargs)
    grads = tape.gradient(loss, [video, text])
    eps = 1e-5
    for _ in range(3):
        du, dv = rng.normal(size=video.shape), rng.normal(size=text.shape)
        plus = vt_twins_loss(video + eps * du, text + eps * dv, **kwargs).numpy()
        minus = vt_twins_loss(video - eps * du, text - eps * dv, **kwargs).numpy()
        directional = np.sum(grads[0].numpy() * du) + np.sum(grads[1].numpy() * dv)
        np.testing.assert_allclose(directional, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_masked_clips_and_captions_change_nothing(embeddings):
    video, text = (x.copy() for x in embeddings)
    video_mask = np.ones((B, N), bool)
    text_mask = np.ones((B, M), bool)
    video_mask[1, 2:] = False  # trailing padding
    video_mask[2, 0] = False  # padding anywhere
    text_mask[0, 1] = False
    text_mask[3, 1:] = False
    video[~video_mask] = np.nan
    text[~text_mask] = 1e6
    video_t, text_t = tf.constant(video), tf.constant(text)
    with tf.GradientTape() as tape:
        tape.watch([video_t, text_t])
        loss = vt_twins_loss(video_t, text_t, video_mask, text_mask, temperature=0.5, symmetric=True)
    want = _reference_loss(video, text, video_mask, text_mask, tau=0.5, symmetric=True)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12)
    grad_video, grad_text = (g.numpy() for g in tape.gradient(loss, [video_t, text_t]))
    assert np.all(grad_video[~video_mask] == 0.0) and np.all(grad_text[~text_mask] == 0.0)
    assert np.all(np.isfinite(grad_video)) and np.abs(grad_video[video_mask]).min() > 0.0


def _ragged_masks():
    """Masks giving videos of 4, 2, 3, 4 clips and texts of 3, 1, 2, 3 captions (padding anywhere)."""
    video_mask, text_mask = np.ones((B, N), bool), np.ones((B, M), bool)
    video_mask[1, 2:] = video_mask[2, 0] = False
    text_mask[1, 1:] = text_mask[2, 1] = False
    return video_mask, text_mask


@pytest.mark.parametrize("symmetric", [False, True])
def test_length_normalized_scores_match_reference(embeddings, symmetric):
    video, text = embeddings
    video_mask, text_mask = _ragged_masks()
    video_t, text_t = tf.constant(video), tf.constant(text)
    with tf.GradientTape() as tape:
        tape.watch([video_t, text_t])
        loss = vt_twins_loss(video_t, text_t, video_mask, text_mask, temperature=0.05, symmetric=symmetric,
                             length_normalize=True)
    want = _reference_loss(video, text, video_mask, text_mask, tau=0.05, symmetric=symmetric, length_normalize=True)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12)
    # The per-pair divisor matters: the unnormalised loss at any one τ differs.
    assert abs(want - _reference_loss(video, text, video_mask, text_mask, tau=0.05 * (N + M),
                                      symmetric=symmetric)) > 1e-3
    # Gradients: central differences of the float64 loss along random directions.
    grads = [g.numpy() for g in tape.gradient(loss, [video_t, text_t])]
    rng = np.random.default_rng(9)
    eps = 1e-5
    for _ in range(3):
        du, dv = rng.normal(size=video.shape), rng.normal(size=text.shape)
        du[~video_mask] = dv[~text_mask] = 0.0
        f = lambda a: _reference_loss(video + a * du, text + a * dv, video_mask, text_mask, tau=0.05,  # noqa: E731
                                      symmetric=symmetric, length_normalize=True)
        np.testing.assert_allclose(np.sum(grads[0] * du) + np.sum(grads[1] * dv), (f(eps) - f(-eps)) / (2 * eps),
                                   rtol=1e-6, atol=1e-8)


def test_length_normalized_equals_a_scaled_temperature_for_equal_lengths(embeddings):
    # Every pair has N + M elements: dividing S by N + M is τ multiplied by N + M.
    video, text = embeddings
    got = vt_twins_loss(video, text, temperature=0.02, length_normalize=True).numpy()
    np.testing.assert_allclose(got, vt_twins_loss(video, text, temperature=0.02 * (N + M)).numpy(), rtol=1e-12)


_BACKEND_SCRIPT = """
import sys
import numpy as np
from vt_keras.backend import value_and_grad
from vt_keras.losses.vt_twins import vt_twins_loss
inputs = dict(np.load(sys.argv[1]))
value, grads = value_and_grad(
    lambda v, t: vt_twins_loss(v, t, inputs["video_mask"], inputs["text_mask"], temperature=0.1,
                               symmetric=True, length_normalize=True),
    [inputs["video"], inputs["text"]])
np.savez(sys.argv[2], value=np.asarray(value), **{f"grad{i}": np.asarray(g) for i, g in enumerate(grads)})
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_length_normalized_loss_on_other_backends(embeddings, tmp_path, backend):
    """JAX and PyTorch (float32, in a process of their own) against the float64 loss and its TF gradients."""
    pytest.importorskip(backend)
    video, text = embeddings
    video_mask, text_mask = _ragged_masks()
    np.savez(tmp_path / "in.npz", video=video.astype(np.float32), text=text.astype(np.float32),
             video_mask=video_mask, text_mask=text_mask)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _BACKEND_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    video_t, text_t = tf.constant(video), tf.constant(text)
    with tf.GradientTape() as tape:
        tape.watch([video_t, text_t])
        loss = vt_twins_loss(video_t, text_t, video_mask, text_mask, temperature=0.1, symmetric=True,
                             length_normalize=True)
    want_grads = [g.numpy() for g in tape.gradient(loss, [video_t, text_t])]
    want = _reference_loss(video, text, video_mask, text_mask, tau=0.1, symmetric=True, length_normalize=True)
    # float32 against float64: each reduction of at most K = 64 terms rounds by K·ε relative,
    # through at most 4 chained reductions (4·64·ε), amplified by the soft-min's 1/γ = 10 and
    # by 1/(τ·(n + m)) ≤ 10/3 of the normalised logits (n + m ≥ 3 here): 4·64·ε·34.
    rtol = 4 * 64 * float(np.finfo(np.float32).eps) * 34
    np.testing.assert_allclose(got["value"], want, rtol=rtol)
    for i, g in enumerate(want_grads):
        np.testing.assert_allclose(got[f"grad{i}"], g, rtol=rtol, atol=rtol * np.abs(g).max(), err_msg=f"grad{i}")


def test_smoothing_and_weak_alignment_layout(rng):
    cost = rng.uniform(-1.0, 1.0, size=(2, 3, 4))
    smoothed = local_neighborhood_smoothing(cost, 0.1).numpy()
    np.testing.assert_allclose(smoothed[:, 0, 0], cost[:, 0, 0] - 0.1 * np.log(3.0), rtol=1e-12)
    for k in range(2):
        np.testing.assert_allclose(smoothed[k], _smooth(cost[k], 0.1), rtol=1e-12)
    weak = weak_alignment_matrix(smoothed, 0.5).numpy()
    assert weak.shape == (2, 7, 9)
    np.testing.assert_array_equal(weak[:, 1::2, 1::2], smoothed)
    off = np.ones((7, 9), bool)
    off[1::2, 1::2] = False
    assert np.all(weak[:, off] == 0.5)


def _local_gradient(video, text, gather):
    with tf.GradientTape() as tape:
        tape.watch(video)
        loss = vt_twins_loss(video, text, temperature=0.5, gather=gather)
    return tape.gradient(loss, video).numpy()


def test_gather_gives_the_global_batch(embeddings):
    video, text = (tf.constant(x[: B // 2]) for x in embeddings)

    def gather(x, axis=0):  # two replicas holding the same examples
        return tf.concat([x, x], axis=axis)

    with tf.GradientTape() as tape:
        tape.watch(video)
        loss = vt_twins_loss(video, text, temperature=0.5, gather=gather)
    want = _reference_loss(np.concatenate([video.numpy()] * 2), np.concatenate([text.numpy()] * 2), tau=0.5)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12)
    doubled = tf.concat([video, video], axis=0)
    with tf.GradientTape() as tape:
        tape.watch(doubled)
        full = vt_twins_loss(doubled, tf.concat([text, text], axis=0), temperature=0.5)
    halves = tf.split(tape.gradient(full, doubled), 2)
    np.testing.assert_allclose(_local_gradient(video, text, gather), (halves[0] + halves[1]).numpy(), atol=1e-12)


@pytest.mark.slow
def test_replica_gather_inside_mirrored_strategy(embeddings, logical_cpus):
    # Slow: XLA compiles the soft-DTW kernels once per replica device.
    video, text = (tf.constant(x, tf.float32) for x in embeddings)
    strategy = tf.distribute.MirroredStrategy(logical_cpus)

    def replica_loss():
        ctx = tf.distribute.get_replica_context()
        start = ctx.replica_id_in_sync_group * (B // 2)
        local_video, local_text = video[start : start + B // 2], text[start : start + B // 2]
        with tf.GradientTape() as tape:
            tape.watch(local_video)
            loss = vt_twins_loss(local_video, local_text, temperature=0.5, gather=replica_gather)
            # The trainer's convention: a global loss contributes loss / replicas.
            contribution = loss / ctx.num_replicas_in_sync
        return loss, tape.gradient(contribution, local_video)

    losses, grads = tf.function(lambda: strategy.run(replica_loss))()
    for loss in strategy.experimental_local_results(losses):
        np.testing.assert_allclose(loss.numpy(), _reference_loss(*embeddings, tau=0.5), rtol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(video)
        full = vt_twins_loss(video, text, temperature=0.5)
    local = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
    np.testing.assert_allclose(local, tape.gradient(full, video).numpy(), rtol=1e-4, atol=1e-6)


def test_local_permutations_match_brute_force():
    for n in range(1, 8):
        brute = sorted(p for p in itertools.permutations(range(n)) if all(abs(p[i] - i) <= 2 for i in range(n)))
        assert sorted(map(tuple, local_permutations(n).tolist())) == brute
    assert len(local_permutations(8)) == 400
    assert local_permutations(8)[0].tolist() == list(range(8))
    with pytest.raises(ConfigError, match="expected n <= 12"):
        local_permutations(30)


def test_temporal_augment_shuffles_only_look_alike_clips(rng):
    x = rng.normal(size=(3, 6, D)).astype(np.float32)
    x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=(3, D))  # clips 0 and 1 look alike
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    lengths = np.array([6, 6, 1])  # the third sequence is all padding but one clip
    swaps = np.zeros(3)
    for seed in range(20):
        out = temporal_augment(tf.constant(x), lengths, seed=seed).numpy()
        for b in range(3):
            order = [int(np.argmin(np.abs(x[b] - row).sum(-1))) for row in out[b]]
            assert order[2:] == [2, 3, 4, 5]  # distinct clips never move
            swaps[b] += order[:2] == [1, 0]
    assert 3 <= swaps[0] <= 17 and 3 <= swaps[1] <= 17 and swaps[2] == 0


def test_augmented_loss_is_reproducible_and_differentiable(embeddings):
    video, text = (tf.constant(x, tf.float32) for x in embeddings)
    with tf.GradientTape() as tape:
        tape.watch(video)
        loss = vt_twins_loss(video, text, augment=True, seed=7)
    assert np.isfinite(loss.numpy()) and np.abs(tape.gradient(loss, video).numpy()).max() > 0
    np.testing.assert_allclose(vt_twins_loss(video, text, augment=True, seed=7).numpy(), loss.numpy())


def test_keras_loss_wrapper(embeddings):
    video, text = embeddings
    loss = VTTwinsLoss(num_clips=N, temperature=1.0, symmetric=True)
    joined = np.concatenate([video, text], axis=1)
    got = loss(np.zeros(B), joined).numpy()
    np.testing.assert_allclose(got, _reference_loss(video, text, symmetric=True), rtol=1e-5)
    mask = np.ones((B, N + M), bool)
    mask[1, N - 1] = mask[2, N] = False
    got = loss(mask, joined).numpy()
    want = _reference_loss(video, text, mask[:, :N], mask[:, N:], symmetric=True)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, VTTwinsLoss) and restored.get_config() == loss.get_config()
    normalized = VTTwinsLoss(num_clips=N, temperature=0.1, length_normalize=True)
    want = _reference_loss(video, text, mask[:, :N], mask[:, N:], tau=0.1, length_normalize=True)
    np.testing.assert_allclose(normalized(mask, joined).numpy(), want, rtol=1e-5)
    assert keras.losses.deserialize(keras.losses.serialize(normalized)).length_normalize is True
    with pytest.raises(UserError, match=r"y_pred must be \[B, num_clips \+ m, d\] with num_clips = 4"):
        loss(np.zeros(B), video)


def test_keras_loss_wrapper_trains_with_fit(embeddings):
    inputs = keras.Input((N + M, D))
    model = keras.Model(inputs, keras.layers.Dense(D)(inputs))
    model.compile(optimizer="sgd", loss=VTTwinsLoss(num_clips=N, temperature=1.0), jit_compile=False)
    joined = np.concatenate(embeddings, axis=1).astype(np.float32)
    losses = model.fit(joined, np.zeros(B), batch_size=B, epochs=4, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_clear_errors(embeddings):
    video, text = embeddings
    with pytest.raises(UserError, match="must share the batch size"):
        vt_twins_loss(video, text[:2])
    with pytest.raises(UserError, match=r"video_mask must have shape \(4, 4\), found \(4, 3\)"):
        vt_twins_loss(video, text, video_mask=np.ones((B, M), bool))
    with pytest.raises(ConfigError, match="gamma and temperature must be > 0"):
        vt_twins_loss(video, text, temperature=0.0)


def test_stateless_seed_draws_from_the_softmax_without_state(rng):
    # Two look-alike pairs: 0 ↔ 1 and 3 ↔ 4 may swap, clip 2 and 5 stay.
    x = rng.normal(size=(1, 6, D)).astype(np.float32)
    x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=(1, D))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    xs = np.repeat(x, 400, axis=0)  # 400 independent draws in one call
    lengths = np.full(400, 6)
    seed = np.array([3, 11], "int32")
    out = temporal_augment(tf.constant(xs), lengths, seed=seed).numpy()
    np.testing.assert_array_equal(temporal_augment(tf.constant(xs), lengths, seed=seed).numpy(), out)
    assert not np.array_equal(temporal_augment(tf.constant(xs), lengths, seed=seed + [0, 1]).numpy(), out)
    swapped = np.array([np.allclose(o[0], x[0, 1]) for o in out])
    kept = np.array([np.allclose(o[0], x[0, 0]) for o in out])
    assert np.all(swapped | kept) and np.allclose(out[:, 2:], x[:, 2:])
    # The probability of drawing clip 1 first, from the softmax over every local permutation.
    perms = local_permutations(6)
    sim = -x[0].astype(np.float64) @ x[0].astype(np.float64).T
    score = np.array([np.linalg.norm(sim - sim[p][:, p]) for p in perms])
    probs = np.exp(-50.0 * (score - score.min()))
    p_swap = probs[perms[:, 0] == 1].sum() / probs.sum()
    assert 0.2 < p_swap < 0.8  # the test means something
    # Binomial(400, p): within 4 standard deviations.
    assert abs(swapped.sum() - 400 * p_swap) <= 4 * np.sqrt(400 * p_swap * (1 - p_swap))
    loss = vt_twins_loss(tf.constant(xs[:4]), tf.constant(xs[:4]), augment=True, seed=seed)
    assert np.isfinite(loss.numpy())
