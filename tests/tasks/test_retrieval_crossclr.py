"""The "crossclr" retrieval loss: values, queue checkpoints, replicas, presets, errors."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored_strategy
from tests.tasks.replicas import assert_moved, initial_weights, replica_atols, weights
from vt_keras.cli.common import load_config_file
from vt_keras.data.video_text_synthetic import make_video_text_data
from vt_keras.errors import ConfigError
from vt_keras.losses.crossclr import PRESETS, crossclr_loss
from vt_keras.tasks import retrieval
from vt_keras.tasks.retrieval import RetrievalTask
from vt_keras import tasks
from vt_keras.train import loop
from vt_keras.train.task import StepContext

CLIP_DIM = 8
BATCH = 16  # = the training videos, so every step sees the same batch in the same order
BOW_DIM = 32


def quiet(*args):
    del args


def load_config(preset=None):
    return load_config_file("configs/retrieval/crossclr.py" + (f":{preset}" if preset else ""))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vt_crossclr"))
    # One shard of 16 training videos: with a shuffle buffer of 1 the training stream
    # is the same 16 records in file order, whatever the seed (resumes reseed the data).
    make_video_text_data(root, num_videos=24, num_steps=20, clip_dim=CLIP_DIM, min_clips=2, max_clips=4,
                         num_shards=1, splits=(2 / 3, 1 / 3, 0.0), influential_steps=2,
                         influential_rate=0.4, text_feature_dim=BOW_DIM)
    return os.path.join(root, "train-*.tfrecord"), os.path.join(root, "validate-*.tfrecord")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny_config(data, cache, preset=None, **loss):
    c = load_config(preset)
    c.data.train_pattern, c.data.eval_pattern = data
    c.data.update(clip_dim=CLIP_DIM, max_clips=4, shuffle_buffer=1)
    c.model.dual_encoder.update(embedding_dim=16, token_embedding_dim=16, max_tokens=8, dropout=0.0)
    c.loss.caption_feature_dim = BOW_DIM
    c.loss.crossclr.update(temperature=0.1, weight_temperature=0.05)
    for key, value in loss.items():
        (c.loss.crossclr if key in c.loss.crossclr else c.loss)[key] = value
    c.train.update(batch_size=BATCH, num_steps=2, checkpoint_every=0, eval_every=0, log_every=1000)
    c.optimizer.update(warmup_steps=0, plateau_monitor="")
    retrieval.prepare_vocabulary(c, cache_dir=cache, log=quiet)
    return c


@pytest.fixture(scope="module")
def batch(data, cache):
    """The training batch (the 16 training videos in file order); parsing it costs seconds."""
    task = RetrievalTask(tiny_config(data, cache))
    return next(iter(task.dataset(data[0], BATCH)))


def bag_of_words(captions, dim):
    """Python re-derivation: hash each lower-case word, count, L2-normalise."""
    out = np.zeros((len(captions), dim))
    for row, caption in enumerate(captions):
        for word in "".join(ch if ch.isalnum() else " " for ch in caption.lower()).split():
            out[row, int(tf.strings.to_hash_bucket_fast(word, dim))] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def local_pairs(out, batch):
    """Valid (clip i, caption i) pairs in video, clip order, with their raw features."""
    valid = np.asarray(batch["caption_mask"])
    captions = [c.decode("utf-8") for c in np.asarray(batch["captions"])[valid]]
    return [np.asarray(out["video_sequence"], np.float64)[valid], np.asarray(out["text_sequence"], np.float64)[valid],
            np.asarray(batch["clips"], np.float64)[valid], bag_of_words(captions, BOW_DIM)]


def options(config):
    """`crossclr_loss`'s options: loss.crossclr without the queue."""
    return {k: v for k, v in config.loss.crossclr.items() if k != "queue_size"}


def expected_loss(config, out, batch, derived=False):
    o = options(config)
    local = float(crossclr_loss(*local_pairs(out, batch), **o))
    if derived:
        clips, mask = np.asarray(batch["clips"], np.float64), np.asarray(batch["clip_mask"])
        video_features = (clips * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        paragraphs = [" ".join(c.decode("utf-8") for c, m in zip(row, rmask) if m)
                      for row, rmask in zip(np.asarray(batch["captions"]), np.asarray(batch["caption_mask"]))]
        text_features = bag_of_words(paragraphs, BOW_DIM)
    else:
        video_features = np.asarray(batch["expert/video_mean"], np.float64)
        text_features = np.asarray(batch["expert/text_bow"], np.float64)
    glob = float(crossclr_loss(np.asarray(out["video"], np.float64), np.asarray(out["text"], np.float64),
                               video_features, text_features, **o))
    return config.loss.local_weight * local + config.loss.global_weight * glob, local, glob


@pytest.mark.parametrize("derived, compat", [(False, False), (True, True)])
def test_entry_is_crossclr_of_the_model_outputs(data, cache, batch, derived, compat):
    config = tiny_config(data, cache, queue_size=0, reference_compat=compat, global_weight=0.7)
    if derived:
        config.loss.update(video_features="", text_features="")
    task = RetrievalTask(config)
    model = task.build_model()
    loss, metrics = task.loss_fn(model, batch, StepContext(BATCH, 1, lambda x, axis=0: x))
    out = model(task.model_inputs(batch), training=False)  # dropout 0: the same outputs
    expected, local, glob = expected_loss(config, out, batch, derived)
    assert local > 0 and glob > 0
    np.testing.assert_allclose(float(loss), expected, rtol=2e-5)
    np.testing.assert_allclose(float(metrics["crossclr"]), expected, rtol=2e-5)
    # Each of two replicas contributes half of the global loss.
    half, _ = task.loss_fn(model, batch, StepContext(BATCH, 2, lambda x, axis=0: x))
    np.testing.assert_allclose(float(half), expected / 2, rtol=2e-5)


def test_queue_holds_the_valid_clip_caption_pairs(data, cache, batch):
    config = tiny_config(data, cache, queue_size=100)
    task = RetrievalTask(config)
    model = task.build_model()
    ctx = StepContext(BATCH, 1, lambda x, axis=0: x)
    first, _ = task.loss_fn(model, batch, ctx)
    out = model(task.model_inputs(batch), training=False)
    expected, _, _ = expected_loss(config, out, batch)
    # The first step's queue is empty: the same loss as without a queue.
    np.testing.assert_allclose(float(first), expected, rtol=2e-5)
    pairs = local_pairs(out, batch)
    state = task.trackables()["loss_state"]
    assert int(state.local.queue_count.numpy()) == len(pairs[0]) == int(np.sum(batch["caption_mask"]))
    for queue, rows in zip(state.local.queues, pairs):
        np.testing.assert_allclose(queue.numpy()[: len(rows)], rows, rtol=1e-5, atol=1e-6)
    # The second step sees the first batch's pairs as extra negatives: a larger loss.
    second, _ = task.loss_fn(model, batch, ctx)
    assert float(second) > float(first)
    assert not state.global_.queue_size


def queue_state(task):
    local = task.trackables()["loss_state"].local
    return [q.numpy() for q in local.queues] + [local.queue_pointer.numpy(), local.queue_count.numpy()]


@pytest.mark.slow
def test_queue_survives_checkpoint_and_resume(data, cache, batch, tmp_path):
    config = tiny_config(data, cache, queue_size=100)
    config.train.update(num_steps=4, checkpoint_every=2)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = tasks.build_task(config)
    _, model_straight = _train(straight, config, str(straight_dir), strategy)
    # A workdir holding only the step-2 checkpoint, as a run stopped after 2 steps leaves it
    # (copied rather than trained again: the loop takes tens of seconds here).
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(straight_dir / "config.json", resumed_dir / "config.json")
    for path in (straight_dir / "checkpoints").glob("ckpt-2.*"):
        shutil.copy(path, resumed_dir / "checkpoints" / path.name)
    (resumed_dir / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    resumed = tasks.build_task(config)
    lines = []
    _, model_resumed = _train(resumed, config, str(resumed_dir), strategy, log=lines.append)
    assert any("resumed from" in line and "at step 2" in line for line in lines), lines
    a, b = queue_state(straight), queue_state(resumed)
    # ~3 pairs per video, 16 videos a step: the queue has wrapped around by step 4.
    pairs = int(np.sum(batch["caption_mask"]))
    assert 4 * pairs > 100 and int(a[-1]) == 100 and int(a[-2]) == 4 * pairs % 100
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(model_straight.weights, model_resumed.weights):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


def _train(task, config, workdir, strategy, log=quiet):
    """Trains with a given task object, so that its queue can be read afterwards."""
    del config  # the task's
    return loop.train(task, workdir, strategy=strategy, log=log)


@pytest.mark.slow
def test_two_replicas_match_one_device(data, cache, tmp_path, logical_cpus):
    # Plain SGD: weights move by exactly the summed gradients.
    config = tiny_config(data, cache, queue_size=100)
    config.train.num_steps = 1
    config.optimizer.update(name="sgd", learning_rate=1.0, momentum=0.0)
    one, two = tasks.build_task(config), tasks.build_task(config)
    strategy = mirrored_strategy(logical_cpus)
    with initial_weights(RetrievalTask) as recorded:
        _, m1 = _train(one, config, str(tmp_path / "one"), tf.distribute.OneDeviceStrategy(logical_cpus[0]))
        _, m2 = _train(two, config, str(tmp_path / "two"), strategy)
    start_one, start_two = recorded
    w1, w2 = weights(m1), weights(m2)
    for a, b in zip(start_one, start_two):
        np.testing.assert_array_equal(a, b)
    assert_moved(start_one, w1, [w.path for w in m1.weights])
    # Plain SGD: weights move by exactly the summed gradients (see replica_atols).
    for a, b, atol in zip(w1, w2, replica_atols(start_one, w1, global_batch=BATCH)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    # Every replica holds the single device's queue.
    local_one = one.trackables()["loss_state"].local
    local_two = two.trackables()["loss_state"].local
    assert int(local_one.queue_count.numpy()) > 0
    for q1, q2 in zip(local_one.queues + [local_one.queue_pointer], local_two.queues + [local_two.queue_pointer]):
        replicas = strategy.experimental_local_results(q2.value)
        assert len(replicas) == 2
        for value in replicas:
            np.testing.assert_allclose(value.numpy(), q1.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", ["youcook2"] + [pytest.param(p, marks=pytest.mark.slow)
                                                  for p in ("lsmdc", "youcook2_mp", "lsmdc_mp")])
def test_presets_take_training_steps(data, cache, batch, preset):
    from vt_keras.train.schedules import build_optimizer

    paper = load_config(preset)
    config = tiny_config(data, cache, preset=preset, temperature=0.03,
                         weight_temperature=paper.loss.crossclr.weight_temperature)
    task = RetrievalTask(config)
    model = task.build_model()
    optimizer = build_optimizer(config.optimizer)
    assert type(optimizer).__name__ == "RAdam" and config.optimizer.learning_rate == 7e-4
    before = [w.numpy() for w in model.trainable_weights]
    ctx = StepContext(BATCH, 1, lambda x, axis=0: x)
    for _ in range(2):  # eager steps: tracing the loop's step costs more than the check is worth
        with tf.GradientTape() as tape:
            loss, _ = task.loss_fn(model, batch, ctx)
        assert np.isfinite(float(loss))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
    local = task.trackables()["loss_state"].local
    assert local.queue_size == paper.loss.crossclr.queue_size
    assert int(local.queue_count.numpy()) == 2 * int(np.sum(batch["caption_mask"]))
    assert local.num_positives == paper.loss.crossclr.num_positives


def test_presets_hold_the_supplement_values():
    youcook2, lsmdc, lsmdc_mp = load_config(), load_config("lsmdc"), load_config("preset=lsmdc_mp")
    y, l, lm = youcook2.loss.crossclr, lsmdc.loss.crossclr, lsmdc_mp.loss.crossclr
    # The supplement's Table 1 and Section 3.1, written out here rather than read from PRESETS.
    assert (y.temperature, y.weight_temperature, y.intra_weight, y.prune_threshold, y.queue_size) == (
        0.03, 35e-4, 0.8, 0.9, 5000)
    assert (l.temperature, l.weight_temperature, l.intra_weight, l.prune_threshold, l.queue_size) == (
        0.03, 55e-4, 0.65, 0.9, 3000)
    assert (lm.num_positives, lm.positive_weight) == (5, 0.2) and lm.queue_size == 3000
    assert y.num_positives == 0 and youcook2.loss.global_weight == 0.6
    assert (youcook2.model.dual_encoder.num_heads, youcook2.model.dual_encoder.dropout) == (8, 0.05)
    assert (lsmdc.model.dual_encoder.num_heads, lsmdc.model.dual_encoder.dropout) == (16, 0.01)
    # One source: the config's loss values are the loss module's presets.
    for config, name in ((youcook2, "youcook2"), (lsmdc, "lsmdc")):
        assert {k: config.loss.crossclr[k] for k in PRESETS[name]} == PRESETS[name]
    assert "info_nce" not in youcook2.loss  # CrossCLR replaces it
    with pytest.raises(ConfigError, match="unknown preset 'msrvtt'.*lsmdc_mp"):
        load_config("msrvtt")


def test_config_errors_name_the_key(data, cache):
    config = tiny_config(data, cache, video_features="audio_mean")
    with pytest.raises(ConfigError, match=r"loss.video_features='audio_mean' is not in data.expert_features"):
        RetrievalTask(config).build_model()
    config = tiny_config(data, cache, local_weight=0.0, global_weight=0.0)
    with pytest.raises(ConfigError, match="both 0"):
        RetrievalTask(config).build_model()
    config = tiny_config(data, cache, intra_weight=-1.0)
    with pytest.raises(ConfigError, match="intra_weight"):
        RetrievalTask(config).build_model()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_trains_under_mixed_precision(data, cache, tmp_path, precision):
    """train.precision: two steps with the half-precision model; the trainer stops on a non-finite loss."""
    config = tiny_config(data, cache)
    config.train.precision = precision
    results, model = tasks.train(config, str(tmp_path / "w"), strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                                 log=quiet)
    assert results["step"] == 2
    assert all(v.dtype == "float32" for v in model.trainable_variables)
