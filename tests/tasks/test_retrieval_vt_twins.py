"""The "vt_twins" retrieval loss: value on model outputs, training, replicas, planted alignment, the plot binary."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, mirrored_strategy
from tests.overrides import set_keys
from tests.tasks.replicas import assert_moved, initial_weights, replica_atols, weights
from vt_keras.cli.common import load_config_file
from vt_keras.cli.plot_alignment import plot_alignment
from vt_keras.data.video_text import make_video_text_example, write_video_text_records
from vt_keras.data.video_text_synthetic import make_video_text_data, synthesize_video_text
from vt_keras.errors import ConfigError, DataError
from vt_keras.losses.vt_twins import vt_twins_loss
from vt_keras.metrics.alignment import pair_alignments, planted_alignment_scores, s2dtw_retrieval_metrics
from vt_keras.tasks import retrieval
from vt_keras.tasks.retrieval import RetrievalTask
from vt_keras.tasks.retrieval_vt_twins import read_planted_alignment
from vt_keras import tasks
from vt_keras.train.task import StepContext

CLIP_DIM = 8
MAX_CLIPS = 5


def quiet(*args):
    del args


def identity(x, axis=0):
    del axis
    return x


def vt_twins_config():
    return load_config_file("configs/retrieval/vt_twins.py")


SYNTHETIC = dict(num_videos=48, num_steps=30, clip_dim=CLIP_DIM, min_clips=3, max_clips=MAX_CLIPS, seed=3,
                 influential_steps=2, shuffle_fraction=0.3, irrelevant_fraction=0.25)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny records with shuffled and irrelevant captions, videos of 3 to 5 clips."""
    root = str(tmp_path_factory.mktemp("vt_twins_data"))
    make_video_text_data(root, num_shards=2, splits=(0.75, 0.25, 0.0), **SYNTHETIC)
    return os.path.join(root, "train-*.tfrecord"), os.path.join(root, "validate-*.tfrecord")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny_config(data, cache, **overrides):
    c = vt_twins_config()
    c.data.train_pattern, c.data.eval_pattern = data
    c.data.clip_dim, c.data.max_clips = CLIP_DIM, MAX_CLIPS
    c.data.shuffle_buffer = 64
    c.model.dual_encoder.update(embedding_dim=16, token_embedding_dim=16, num_heads=2, max_tokens=8, dropout=0.0)
    c.train.update(batch_size=8, num_steps=2, checkpoint_every=0, eval_every=0, log_every=1000)
    c.optimizer.update(warmup_steps=0, decay="constant", learning_rate=3e-3)
    set_keys(c, overrides)
    retrieval.prepare_vocabulary(c, cache_dir=cache, log=quiet)
    return c


def _softmin(values, gamma):
    values = np.asarray(values, np.float64)
    low = values.min()
    if not np.isfinite(low):
        return low
    return low - gamma * np.log(np.exp(-(values - low) / gamma).sum())


def numpy_weak_matrix(v, t, gamma, theta):
    """The weak-alignment matrix of clips `v [n, d]` and captions `t [m, d]`, float64 loops."""
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    c = -v @ t.T
    n, m = c.shape
    smooth = np.empty_like(c)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                neighbours = [0.0, 0.0, 0.0]
            else:
                neighbours = [c[i, j - 1] if j else np.inf, c[i - 1, j] if i else np.inf,
                              c[i - 1, j - 1] if i and j else np.inf]
            smooth[i, j] = c[i, j] + _softmin(neighbours, gamma)
    w = np.full((2 * n + 1, 2 * m + 1), theta)
    w[1::2, 1::2] = smooth
    return w


def numpy_soft_dtw(w, gamma):
    r = np.full((w.shape[0] + 1, w.shape[1] + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, w.shape[0] + 1):
        for j in range(1, w.shape[1] + 1):
            r[i, j] = w[i - 1, j - 1] + _softmin([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]], gamma)
    return r[-1, -1]


def numpy_s2dtw(v, t, gamma, theta):
    return numpy_soft_dtw(numpy_weak_matrix(v, t, gamma, theta), gamma)


def numpy_vt_twins(video, text, video_mask, text_mask, gamma, theta, tau, length_normalize=False):
    """Text-anchored InfoNCE over S[p, q] = S2DTW(video q, text p) of the valid rows (÷ n_q + m_p if asked)."""
    b = len(video)
    s = np.array([[numpy_s2dtw(video[q][video_mask[q]], text[p][text_mask[p]], gamma, theta) for q in range(b)]
                  for p in range(b)])
    if length_normalize:
        s = s / (video_mask.sum(axis=1)[None, :] + text_mask.sum(axis=1)[:, None])
    logits = -s / tau
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - np.diag(logits)))


def numpy_info_nce(v, t, tau):
    s = v @ t.T / tau

    def ce(x):
        x = x - x.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(x).sum(axis=1)) - np.diag(x))

    return 0.5 * (ce(s) + ce(s.T))


def test_config_defaults_and_presets():
    c = vt_twins_config()
    assert c.loss.name == "vt_twins" and c.task == "retrieval" and c.preset == "normalized"
    v = c.loss.vt_twins
    assert (v.gamma, v.theta, v.temperature, v.length_normalize) == (0.1, 0.5, 0.1, True)
    assert not v.symmetric and not v.augment and c.loss.info_nce_weight == 0.0
    assert c.loss.info_nce.temperature == 0.05  # the pooled term's τ: info_nce.py's
    assert "vt_twins" in retrieval.RETRIEVAL_LOSSES
    # The paper's Eq. 12 (supplement: τ = 0.02) and the released code (no τ), one preset each;
    # nothing else differs.
    for preset, temperature in (("paper", 0.02), ("code", 1.0)):
        other = load_config_file(f"configs/retrieval/vt_twins.py:{preset}")
        assert (other.loss.vt_twins.temperature, other.loss.vt_twins.length_normalize) == (temperature, False)
        other.loss.vt_twins.update(temperature=v.temperature, length_normalize=True)
        other.preset = c.preset
        assert other.to_dict() == c.to_dict()
    with pytest.raises(ConfigError, match="normalized, paper, code"):
        load_config_file("configs/retrieval/vt_twins.py:papers")


@pytest.mark.parametrize("info_nce_weight, length_normalize", [(0.0, False), (0.7, True)])
def test_task_loss_is_vt_twins_of_the_clip_and_caption_sequences(data, cache, info_nce_weight, length_normalize):
    config = tiny_config(data, cache, **{"loss.info_nce_weight": info_nce_weight, "loss.vt_twins.temperature": 0.1,
                                         "loss.vt_twins.length_normalize": length_normalize})
    task = RetrievalTask(config)
    model = task.build_model()
    batch = next(iter(task.dataset(data[0], 6)))
    lengths = batch["num_clips"].numpy()
    assert lengths.min() < lengths.max(), "the batch should mix sequence lengths (masks matter)"
    loss, metrics = task.loss_fn(model, batch, StepContext(global_batch_size=6, num_replicas=1, gather=identity))
    out = model(task.model_inputs(batch), training=False)  # dropout 0: the training outputs
    direct = vt_twins_loss(out["video_sequence"], out["text_sequence"], out["video_mask"], out["text_mask"],
                           gamma=0.1, theta=0.5, temperature=0.1, length_normalize=length_normalize)
    as_np = {k: np.asarray(v, np.float64) for k, v in out.items()}
    reference = numpy_vt_twins(as_np["video_sequence"], as_np["text_sequence"], as_np["video_mask"] > 0,
                               as_np["text_mask"] > 0, 0.1, 0.5, 0.1, length_normalize)
    pooled = numpy_info_nce(as_np["video"], as_np["text"], 0.05)
    np.testing.assert_allclose(float(direct), reference, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["vt_twins"]), float(direct) + info_nce_weight * pooled, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(metrics["vt_twins"]), rtol=1e-6)
    # One of two replicas contributes half of the global loss (the trainer sums them).
    half, _ = task.loss_fn(model, batch, StepContext(6, 2, identity))
    np.testing.assert_allclose(float(half), float(loss) / 2, rtol=1e-6)


def test_bad_loss_settings_name_the_key(data, cache):
    for key, value in (("loss.vt_twins.temperature", 0.0), ("loss.vt_twins.gamma", -1.0),
                       ("loss.info_nce_weight", -0.5)):
        config = tiny_config(data, cache, **{key: value})
        # Made with the task, before any data or model: the run fails at its start.
        with pytest.raises(ConfigError, match=f"{key}={value}".replace(".", r"\.")):
            RetrievalTask(config)
        with pytest.raises(ConfigError, match=f"{key}={value}".replace(".", r"\.")):
            RetrievalTask.prepare_config(config, log=quiet)


@pytest.fixture(scope="module")
def trained(data, cache, tmp_path_factory):
    """Three steps of configs/retrieval/vt_twins.py, with the temporal augmentation (its stateless
    seeds must work inside the compiled step): (config, workdir, results, model, log lines)."""
    config = tiny_config(data, cache, **{"loss.vt_twins.augment": True, "train.num_steps": 3, "train.log_every": 1})
    workdir = str(tmp_path_factory.mktemp("trained") / "w")
    logged = []
    with initial_weights(RetrievalTask) as recorded:
        results, model = tasks.train(config, workdir, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                                    log=logged.append)
    return config, workdir, results, model, logged, recorded[0]


def test_training_steps_run_with_finite_loss(trained):
    config, workdir, results, model, logged, initial = trained
    losses = [float(line.split("loss=")[1].split()[0]) for line in logged if line.startswith("step ")]
    assert len(losses) == 3 and all(np.isfinite(losses)), logged
    assert results["num_videos"] == 12 and np.isfinite(results["t2v/MnR"])
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["step"] == 3
    assert_moved(initial, weights(model), [w.path for w in model.weights])
    # The augmentation's seed generator advanced once per step (video and text draws) and is
    # checkpointed with the run, so a resume continues its draws.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))
    seed_keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("loss_state/augment_seed_state")]
    assert len(seed_keys) == 1
    assert reader.get_tensor(seed_keys[0]).tolist() != [config.loss.augment_seed, 0]


@pytest.mark.slow
def test_two_replicas_match_one_device(data, cache, tmp_path, logical_cpus):
    # Plain SGD: the weights move by exactly the summed gradients (see replica_atols).
    config = tiny_config(data, cache, **{"train.num_steps": 1, "optimizer.name": "sgd",
                                         "optimizer.learning_rate": 0.5, "loss.info_nce_weight": 0.5})
    config.optimizer.momentum = 0.0
    with initial_weights(RetrievalTask) as recorded:
        _, one = tasks.train(config, str(tmp_path / "one"), log=quiet,
                            strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]))
        _, two = tasks.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    start_one, start_two = recorded
    w1, w2 = weights(one), weights(two)
    assert len(w1) == len(w2) == len(start_one) > 0
    for a, b in zip(start_one, start_two):
        np.testing.assert_array_equal(a, b)
    assert_moved(start_one, w1, [w.path for w in one.weights])
    for a, b, atol in zip(w1, w2, replica_atols(start_one, w1, global_batch=8)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_planted_ground_truth_is_read_back_from_the_records(data, tmp_path):
    videos, _ = synthesize_video_text(**SYNTHETIC)
    truth = read_planted_alignment([data[0], data[1]])
    assert len(truth) == len(videos) == 48
    for video in videos:
        for key in ("clip_step", "caption_step", "caption_kind"):
            np.testing.assert_array_equal(truth[video["id"]][key], video[key])
    assert any((t["caption_kind"] == 2).any() for t in truth.values())
    # Real records carry no ground truth.
    plain = str(tmp_path / "plain.tfrecord")
    write_video_text_records(plain, [make_video_text_example("v", np.ones((2, CLIP_DIM), np.float32), ["a b", "c"])])
    assert read_planted_alignment(plain) == {}


def test_pair_alignments_are_s2dtw_and_its_gradient(rng):
    gamma, theta = 0.3, 0.5
    video, text = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 4))
    vlen, tlen = np.array([3, 2]), np.array([4, 3])
    cost, value, align = pair_alignments(video, text, vlen, tlen, gamma, theta)
    for p in range(2):
        v, t = video[p, :vlen[p]], text[p, :tlen[p]]
        expected_cost = -(v / np.linalg.norm(v, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
        np.testing.assert_allclose(cost[p, :vlen[p], :tlen[p]], expected_cost, atol=1e-5)
        w = numpy_weak_matrix(v, t, gamma, theta)
        np.testing.assert_allclose(value[p], numpy_soft_dtw(w, gamma), rtol=1e-4, atol=1e-5)
        # Central differences of the float64 recursion, cell by cell.
        grad = np.zeros_like(w)
        for idx in np.ndindex(*w.shape):
            step = np.zeros_like(w)
            step[idx] = 1e-5
            grad[idx] = (numpy_soft_dtw(w + step, gamma) - numpy_soft_dtw(w - step, gamma)) / 2e-5
        rows, cols = w.shape
        np.testing.assert_allclose(align[p, :rows, :cols], grad, atol=2e-4)
        assert np.all(align[p, rows:] == 0) and np.all(align[p, :, cols:] == 0)


def test_planted_scores_and_s2dtw_retrieval_match_a_numpy_recount(trained, data):
    config, _, _, model, _, _ = trained
    task = RetrievalTask(config)
    embedded = task.embed_sequences(model, data[1], batch_size=5)
    scores = planted_alignment_scores(embedded, read_planted_alignment(data[1]))
    truth = {v["id"]: v for v in synthesize_video_text(**SYNTHETIC)[0]}
    batch = next(iter(task.dataset(data[1], 100)))
    assert embedded["ids"] == [v.decode() for v in batch["id"].numpy()]
    out = model(task.model_inputs(batch), training=False)
    video, text = np.asarray(out["video_sequence"], np.float64), np.asarray(out["text_sequence"], np.float64)
    hits, relevant, irrelevant = [], [], []
    lengths = batch["num_clips"].numpy()
    for b, vid in enumerate(embedded["ids"]):
        n = lengths[b]
        sim = video[b, :n] @ text[b, :n].T
        t = truth[vid]
        for j in range(n):
            if t["caption_kind"][j] == 2:
                irrelevant.append(sim[:, j].max())
            else:
                relevant.append(sim[:, j].max())
                hits.append(t["clip_step"][np.argmax(sim[:, j])] == t["caption_step"][j])
    auc = np.mean([(r > i) + 0.5 * (r == i) for r in relevant for i in irrelevant])
    assert scores["num_videos"] == 12
    assert scores["caption_to_clip_accuracy"] == pytest.approx(np.mean(hits))
    assert scores["irrelevant_auc"] == pytest.approx(auc)
    assert 0.0 <= scores["alignment_on_truth"] <= 1.0
    assert scores["relevant_caption_mass"] > 0 and scores["irrelevant_caption_mass"] >= 0
    # Retrieval ranked by S2DTW: brute force over every (captions, video) pair.
    s = np.array([[numpy_s2dtw(video[q, :lengths[q]], text[p, :lengths[p]], 0.1, 0.5) for q in range(12)]
                  for p in range(12)])
    t2v_ranks = [(s[p] <= s[p, p]).sum() for p in range(12)]
    v2t_ranks = [(s[:, q] <= s[q, q]).sum() for q in range(12)]
    ranked = s2dtw_retrieval_metrics(embedded)
    for prefix, r in (("s2dtw_t2v", t2v_ranks), ("s2dtw_v2t", v2t_ranks)):
        assert ranked[f"{prefix}/R@1"] == pytest.approx(100.0 * np.mean(np.array(r) <= 1))
        assert ranked[f"{prefix}/R@5"] == pytest.approx(100.0 * np.mean(np.array(r) <= 5))
        assert ranked[f"{prefix}/MnR"] == pytest.approx(np.mean(r))


def test_plot_alignment_draws_a_positive_and_a_hard_negative_pair(trained, data, tmp_path):
    _, workdir, _, _, _, _ = trained
    output = str(tmp_path / "alignment.png")
    drawn = plot_alignment(workdir, data[1], output, scores_output=str(tmp_path / "scores.json"))
    with open(output, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(output) < 200_000
    truth = read_planted_alignment(data[1])
    # By default: the first video with a planted irrelevant caption.
    assert (truth[drawn["video_id"]]["caption_kind"] == 2).any()
    assert drawn["negative_id"] != drawn["video_id"] and len(drawn["s2dtw"]) == 2
    with open(tmp_path / "scores.json") as f:
        saved = json.load(f)
    assert saved["num_videos"] == 12 and "s2dtw_t2v/R@1" in saved
    with pytest.raises(DataError, match="--video_id=nope is not among the 12 videos"):
        plot_alignment(workdir, data[1], output, video_id="nope")


@pytest.mark.slow
def test_bin_plot_alignment_writes_a_png(trained, data, tmp_path):
    _, workdir, _, _, _, _ = trained
    vid = sorted(read_planted_alignment(data[1]))[-1]
    output = str(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "plot_alignment"), f"--workdir={workdir}",
                           f"--data={data[1]}", f"--video_id={vid}", f"--output={output}"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {output}: video {vid}" in proc.stdout and "caption_to_clip_accuracy=" in proc.stdout
    assert os.path.getsize(output) > 10_000


@pytest.mark.slow  # a fresh process imports TensorFlow and restores the model
def test_bin_plot_alignment_unknown_video_is_one_line(trained, data, tmp_path):
    _, workdir, _, _, _, _ = trained
    output = str(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "plot_alignment"), f"--workdir={workdir}",
                           f"--data={data[1]}", "--video_id=nope", f"--output={output}"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --video_id=nope is not among the 12 videos of --data={data[1]}"]
    assert "Traceback" not in proc.stderr and not os.path.exists(output)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_trains_under_mixed_precision(data, cache, tmp_path, precision):
    """train.precision: two steps with the half-precision model; the trainer stops on a non-finite loss."""
    config = tiny_config(data, cache)
    config.train.precision = precision
    results, model = tasks.train(config, str(tmp_path / "w"), strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                                 log=quiet)
    assert results["step"] == 2
    assert all(v.dtype == "float32" for v in model.trainable_variables)
