"""The retrieval task: loss and CKA term, replicas, learning, evaluation, vocabulary, export."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored_strategy
from tests.overrides import set_keys
from tests.tasks.replicas import assert_moved, initial_weights, replica_atols, weights
from vt_keras.cli.common import load_config_file
from vt_keras.data.video_text_synthetic import make_video_text_data
from vt_keras.errors import ConfigError, DataError
from vt_keras.tasks import retrieval
from vt_keras.tasks.retrieval import RetrievalTask
from vt_keras import tasks
from vt_keras.train.task import StepContext

CLIP_DIM = 8


def quiet(*args):
    del args


def base_config():
    return load_config_file("configs/retrieval/info_nce.py")


def write_tiny_data(root, num_videos=120, seed=0):
    """Planted steps, little noise: learnable in a few dozen steps."""
    make_video_text_data(root, num_videos=num_videos, num_steps=40, clip_dim=CLIP_DIM, min_clips=2,
                         max_clips=4, seed=seed, num_shards=2, splits=(0.7, 0.3, 0.0),
                         influential_steps=2, shuffle_fraction=0.0, irrelevant_fraction=0.0,
                         clip_noise=0.2)
    return os.path.join(root, "train-*.tfrecord"), os.path.join(root, "validate-*.tfrecord")


def tiny_config(data, cache_dir=None, **overrides):
    """A small retrieval config on `data` = (train, eval) patterns.

    With `cache_dir`, its vocabulary is built there as bin/train would.
    """
    c = base_config()
    c.data.train_pattern, c.data.eval_pattern = data
    c.data.clip_dim, c.data.max_clips = CLIP_DIM, 4
    c.data.shuffle_buffer = 64
    c.model.dual_encoder.update(embedding_dim=16, token_embedding_dim=16, num_heads=2, max_tokens=8, dropout=0.0)
    c.train.update(batch_size=16, num_steps=2, checkpoint_every=0, eval_every=0, log_every=1000)
    c.optimizer.update(warmup_steps=0, decay="constant", learning_rate=3e-3)
    set_keys(c, overrides)
    if cache_dir:
        retrieval.prepare_vocabulary(c, cache_dir=cache_dir, log=quiet)
    return c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data(str(tmp_path_factory.mktemp("vt")))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def first_batch(task, pattern, size):
    return next(iter(task.dataset(pattern, size)))


def numpy_info_nce(v, t, tau):
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    s = v @ t.T / tau

    def ce(m):
        m = m - m.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(m).sum(axis=1)) - np.diag(m))

    return 0.5 * (ce(s) + ce(s.T))


def numpy_linear_cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("cka_weight", [0.0, 0.5])
def test_loss_is_info_nce_minus_weighted_cka_of_the_pooled_embeddings(data, cache, cka_weight):
    config = tiny_config(data, cache, **{"loss.cka_weight": cka_weight, "loss.info_nce.temperature": 0.1})
    task = RetrievalTask(config)
    model = task.build_model()
    batch = first_batch(task, data[0], 12)
    ctx = StepContext(global_batch_size=12, num_replicas=1, gather=lambda x, axis=0: x)
    loss, metrics = task.loss_fn(model, batch, ctx)
    out = model(task.model_inputs(batch), training=False)  # dropout is 0: same outputs
    v, t = np.asarray(out["video"], np.float64), np.asarray(out["text"], np.float64)
    expected_nce = numpy_info_nce(v, t, 0.1)
    np.testing.assert_allclose(float(metrics["info_nce"]), expected_nce, rtol=1e-5)
    if cka_weight:
        expected_cka = numpy_linear_cka(v, t)
        np.testing.assert_allclose(float(metrics["cka"]), expected_cka, rtol=1e-4)
        np.testing.assert_allclose(float(loss), expected_nce - cka_weight * expected_cka, rtol=1e-5)
    else:
        assert "cka" not in metrics
        np.testing.assert_allclose(float(loss), expected_nce, rtol=1e-5)
    # The contribution of one of two replicas is half the global loss.
    half, _ = task.loss_fn(model, batch, StepContext(12, 2, ctx.gather))
    np.testing.assert_allclose(float(half), float(loss) / 2, rtol=1e-6)


def test_two_replicas_match_one_device_with_the_cka_term(data, cache, tmp_path, logical_cpus):
    # Plain SGD: weights move by exactly the summed gradients (see replica_atol).
    config = tiny_config(data, cache, **{"loss.cka_weight": 0.5, "train.num_steps": 2, "optimizer.name": "sgd",
                                         "optimizer.learning_rate": 1.0})
    config.optimizer.momentum = 0.0
    with initial_weights(RetrievalTask) as recorded:
        _, one = tasks.train(config, str(tmp_path / "one"), log=quiet,
                            strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]))
        _, two = tasks.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    start_one, start_two = recorded
    w1, w2 = weights(one), weights(two)
    assert len(w1) == len(w2) == len(start_one) > 0
    # Both runs start from the same weights (config.seed), and training moved every one of them.
    for a, b in zip(start_one, start_two):
        np.testing.assert_array_equal(a, b)
    assert_moved(start_one, w1, [w.path for w in one.weights])
    for a, b, atol in zip(w1, w2, replica_atols(start_one, w1, global_batch=16)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.mark.slow
def test_training_on_planted_steps_beats_chance_and_restores(data, cache, tmp_path):
    config = tiny_config(data, cache, **{"train.num_steps": 60})
    workdir = str(tmp_path / "w")
    task = RetrievalTask(config)
    before = task.evaluate(task.build_model(), data[1])
    results, model = tasks.train(config, workdir, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), log=quiet)
    n = results["num_videos"]
    chance = 100.0 / n
    for direction in ("t2v", "v2t"):
        assert results[f"{direction}/R@1"] > 5 * chance, results
        assert results[f"{direction}/R@1"] > before[f"{direction}/R@1"] + 10, (before, results)
        assert results[f"{direction}/MedR"] < before[f"{direction}/MedR"]
    with open(os.path.join(workdir, "metrics.json")) as f:
        saved = json.load(f)
    assert {f"{d}/{k}" for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10", "MedR", "MnR")} <= set(saved)
    # What bin/evaluate does: the saved config and the checkpoint give the same numbers.
    from vt_keras.train import checkpoints

    restored_task, restored = tasks.restore_model(checkpoints.load_config(workdir), workdir)
    again = restored_task.evaluate(restored, data[1])
    for key in ("t2v/R@1", "v2t/R@1", "t2v/MnR"):
        assert again[key] == pytest.approx(results[key])


def test_evaluate_ranks_every_video_of_the_split(data, cache):
    task = RetrievalTask(tiny_config(data, cache))
    model = task.build_model()
    results = task.evaluate(model, data[1])
    batch = first_batch(task, data[1], 1000)  # the whole split at once
    out = model(task.model_inputs(batch), training=False)
    s = np.asarray(out["text"], np.float64) @ np.asarray(out["video"], np.float64).T
    n = s.shape[0]
    assert results["num_videos"] == n == 36
    # Brute force, pessimistic ties: rank = candidates scoring at least the true one.
    t2v = [(s[i] >= s[i, i]).sum() for i in range(n)]
    v2t = [(s[:, i] >= s[i, i]).sum() for i in range(n)]
    for prefix, ranks in (("t2v", t2v), ("v2t", v2t)):
        assert results[f"{prefix}/R@1"] == pytest.approx(100.0 * np.mean(np.array(ranks) <= 1))
        assert results[f"{prefix}/R@5"] == pytest.approx(100.0 * np.mean(np.array(ranks) <= 5))
        assert results[f"{prefix}/MnR"] == pytest.approx(np.mean(ranks), rel=1e-5)
    table = task.format_results(results)
    assert "among 36 videos" in table and "text→video" in table and "video→text" in table


def test_vocabulary_is_cached_by_content_and_checked(data, cache, tmp_path):
    config = tiny_config(data, cache)
    path = config.data.vocabulary
    assert path.startswith(os.path.join(cache, "vocabularies"))
    with open(path) as f:
        words = f.read().split()
    assert "the" in words and len(words) == len(set(words)) > 40
    # Building again from the same captions reuses the file and the digest.
    again = tiny_config(data, cache)
    assert again.data.vocabulary == path
    assert again.model.vocabulary_sha256 == config.model.vocabulary_sha256
    # A vocabulary edited after training would give other ids: refused.
    edited = tmp_path / "vocab.txt"
    edited.write_text("\n".join(reversed(words)) + "\n")
    config.data.vocabulary = str(edited)
    with pytest.raises(DataError, match="changed since training"):
        RetrievalTask(config).build_model()


def test_empty_train_pattern_uses_the_cached_default_data(cache, monkeypatch, tmp_path):
    calls = []

    def tiny_default(output_dir):
        calls.append(output_dir)
        write_tiny_data(output_dir, num_videos=30)

    monkeypatch.setenv("VT_KERAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("vt_keras.data.video_text_synthetic.make_video_text_data", tiny_default)
    for _ in range(2):
        config = base_config()
        config.data.clip_dim = CLIP_DIM
        assert RetrievalTask.prepare_config(config, log=quiet) is True
    assert len(calls) == 1  # generated once, then reused
    root = os.path.join(str(tmp_path / "cache"), retrieval.DEFAULT_DATASET)
    assert config.data.train_pattern == os.path.join(root, "train-*.tfrecord")
    assert config.data.eval_pattern == os.path.join(root, "validate-*.tfrecord")
    assert config.data.vocabulary.startswith(str(tmp_path / "cache"))


def test_prepare_config_names_bad_records_and_settings(data, cache, monkeypatch):
    monkeypatch.setenv("VT_KERAS_CACHE", cache)
    config = base_config()
    config.data.train_pattern, config.data.eval_pattern = data
    config.data.clip_dim = CLIP_DIM + 1
    with pytest.raises(DataError, match=r"train-00000-of-00002.tfrecord.*clip_dim=9 values per clip, found 8"):
        RetrievalTask.prepare_config(config, log=quiet)
    config.data.clip_dim = CLIP_DIM
    config.loss.name = "no_such_loss"
    with pytest.raises(ConfigError, match=r"loss.name='no_such_loss'.*info_nce"):
        RetrievalTask.prepare_config(config, log=quiet)
    config.loss.name = "info_nce"
    config.loss.cka_weight = -1.0
    with pytest.raises(ConfigError, match="loss.cka_weight"):
        RetrievalTask(config)


FRESH_PROCESS = r"""
import sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401
loaded = tf.saved_model.load(sys.argv[1])
args = np.load(sys.argv[2], allow_pickle=True)
strings = tf.constant([s.encode("utf-8") for s in args["strings"]])
clips, num_clips = tf.constant(args["clips"]), tf.constant(args["num_clips"])
sig = loaded.signatures
np.savez(sys.argv[3],
         text=sig["embed_text"](strings=strings)["embedding"].numpy(),
         default=sig["serving_default"](strings=strings)["embedding"].numpy(),
         video=sig["embed_video"](clips=clips, num_clips=num_clips)["embedding"].numpy(),
         similarity=sig["similarity"](strings=strings, clips=clips, num_clips=num_clips)["similarity"].numpy(),
         max_clips=sig["model_info"]()["max_clips"].numpy())
assert not any(m.split(".")[0] == "vt_keras" for m in sys.modules)
"""


def test_export_serves_raw_strings_in_a_fresh_tensorflow_text_process(data, cache, tmp_path, rng):
    task = RetrievalTask(tiny_config(data, cache))
    model = task.build_model()
    export_dir = str(tmp_path / "export")
    task.export(model, export_dir)
    strings = np.array(["Crack the EGGS!", "", "words nobody has seen", "the the the"], dtype=object)
    # More clips than the trained 4: the export drops the extra ones, as training does.
    clips = rng.normal(size=(3, 6, CLIP_DIM)).astype(np.float32)
    num_clips = np.array([1, 6, 3], np.int32)
    np.savez(tmp_path / "in.npz", strings=strings, clips=clips, num_clips=num_clips)
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, export_dir, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    text = np.asarray(model.embed_text(tf.constant(strings.astype(str))))
    video = np.asarray(model.embed_video(clips[:, :4], np.minimum(num_clips, 4)))
    np.testing.assert_allclose(out["text"], text, atol=1e-5)
    np.testing.assert_allclose(out["default"], text, atol=1e-5)
    np.testing.assert_allclose(out["video"], video, atol=1e-5)
    np.testing.assert_allclose(out["similarity"], text @ video.T, atol=1e-5)
    assert int(out["max_clips"]) == 4


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_trains_under_mixed_precision(data, cache, tmp_path, precision):
    """train.precision: two steps with the half-precision model; the trainer stops on a non-finite loss."""
    config = tiny_config(data, cache_dir=cache)
    config.train.precision = precision
    results, model = tasks.train(config, str(tmp_path / "w"), strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                                 log=quiet)
    assert results["step"] == 2
    assert all(v.dtype == "float32" for v in model.trainable_variables)


def test_a_truncated_training_file_stops_naming_it_or_is_skipped(data, cache, tmp_path):
    """data.skip_corrupt_records (bin/train --skip_corrupt_records) reaches the video-text reader."""
    import glob
    import shutil

    from vt_keras.data.checks import data_counters, reset_data_counters
    from vt_keras.errors import DataError

    files = sorted(glob.glob(data[0]))
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    for path in files:
        shutil.copy(path, damaged_dir)
    victim = damaged_dir / os.path.basename(files[0])
    victim.write_bytes(victim.read_bytes()[:-100])  # cut inside the last record
    pattern = str(damaged_dir / "train-*.tfrecord")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    # The vocabulary comes from the intact files (bin/train builds it with the same reader and flag).
    config = tiny_config(data, cache_dir=cache)
    config.data.train_pattern = pattern
    with pytest.raises(DataError, match=rf"{os.path.basename(files[0])}' is truncated or corrupt"):
        tasks.train(config, str(tmp_path / "stop"), strategy=strategy, log=quiet)
    reset_data_counters()
    config = tiny_config(data, cache_dir=cache, **{"data.skip_corrupt_records": True, "train.num_steps": 10})
    config.data.train_pattern = pattern
    results, _ = tasks.train(config, str(tmp_path / "skip"), strategy=strategy, log=quiet)
    assert results["step"] == 10
    assert data_counters().get("skipped_corrupt_files", 0) >= 1
