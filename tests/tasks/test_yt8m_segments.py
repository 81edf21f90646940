"""Training on rated segments (`data.segment_labels`): the weighted loss, batches, warm start, fine-tune runs."""
import math
import types

import numpy as np
import pytest
import tensorflow as tf

from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from tests.yt8m_video_fixtures import (RATED_FRAMES, TINY_CLASSES, tiny_video_config, write_tiny_rated,
                                       write_tiny_video_level)
from vt_keras import tasks
from vt_keras.data.segments import SEGMENT_FRAMES, read_segment_ratings, segment_dataset
from vt_keras.errors import CheckpointError, ConfigError
from vt_keras.metrics.segments import segment_map
from vt_keras.tasks.yt8m import multilabel_cross_entropy
from vt_keras.train.checkpoints import load_config
from vt_keras.train.task import StepContext


def quiet(*args):
    del args


def one_device():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    root = tmp_path_factory.mktemp("rated")
    return write_tiny_rated(str(root), num_videos=16, prefix="validate"), write_tiny_rated(
        str(root), num_videos=12, seed=1, prefix="test")


@pytest.fixture(scope="module")
def video_workdir(tmp_path_factory):
    """A tiny video-level MoE trained a few steps: the run a segment fine-tune starts from."""
    root = tmp_path_factory.mktemp("video")
    train = write_tiny_video_level(str(root), num_videos=32, prefix="train")
    workdir = str(root / "w")
    tasks.train(tiny_video_config(train, **{"train.num_steps": 4}), workdir, strategy=one_device(), log=quiet)
    return workdir


def segment_config(rated, **overrides):
    return tiny_video_config(rated[0], rated[1], **{"data.segment_labels": True, **overrides})


def test_label_weighted_loss_is_the_rated_class_alone():
    # Row 0: class 1 rated present (score 1): -ln(0.7) = 0.3566749439.
    #   Without weights the row would cost -ln(0.8) - ln(0.7) - ln(0.1) = 2.8824035882.
    # Row 1: class 0 rated absent (score 0): -ln(1 - 0.6) = 0.9162907319.
    probs = tf.constant([[0.2, 0.7, 0.9], [0.6, 0.5, 0.3]])
    labels = tf.constant([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    weights = tf.constant([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    got = multilabel_cross_entropy(labels, probs, weights).numpy()
    # float32 logs of numbers near 1: within 1e-6 relative.
    np.testing.assert_allclose(got, [0.3566749439, 0.9162907319], rtol=1e-6)
    np.testing.assert_allclose(multilabel_cross_entropy(labels, probs).numpy()[0], 2.8824035882, rtol=1e-6)


def test_task_loss_counts_the_rated_class_only(rated):
    """The task's loss on a real batch of rated pairs against numpy, and no gradient for unrated classes."""
    config = segment_config(rated, **{"model.head": "logistic"})
    config.model = tiny_video_config(rated[0], config_file="configs/yt8m/video_logistic.py").model
    config.model.logistic.l2_penalty = 0.0
    task = tasks.build_task(config)
    model = task.build_model()
    batch = next(iter(task.rated_segment_dataset(rated[0], 6)))
    pairs = int(batch["segment_class"].shape[0])
    ctx = StepContext(global_batch_size=pairs, num_replicas=1, gather=lambda x, axis=0: x)
    kernel = model.get_layer("logistic").kernel
    with tf.GradientTape() as tape:
        loss, _ = task.loss_fn(model, batch, ctx)
    grad = tape.gradient(loss, kernel).numpy()

    probs = np.asarray(model(task.model_inputs(batch)), np.float64)
    classes = batch["segment_class"].numpy()
    p = probs[np.arange(pairs), classes]
    y = batch["labels"].numpy()[np.arange(pairs), classes]
    want = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    # float32 probabilities and logs, summed over 6 pairs: within 1e-5 relative.
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    unrated = sorted(set(range(TINY_CLASSES)) - set(classes.tolist()))
    assert unrated, classes  # the batch leaves some class unrated
    assert np.all(grad[:, unrated] == 0.0) and np.all(np.abs(grad[:, sorted(set(classes))]).sum(0) > 0)


def test_frame_level_segments_are_padded_and_masked_to_max_frames(rated, tmp_path):
    config = tiny_config(rated[0], **{"data.segment_labels": True, "data.max_frames": RATED_FRAMES})
    task = tasks.build_task(config)
    batch = next(iter(task.rated_segment_dataset(rated[0], 8)))
    plain = next(iter(segment_dataset(rated[0], 8, features=task.features, num_classes=TINY_CLASSES,
                                      max_frames=RATED_FRAMES)))
    assert batch["rgb"].shape == (8, RATED_FRAMES, 8) and batch["mask"].shape == (8, RATED_FRAMES)
    np.testing.assert_array_equal(batch["rgb"][:, :SEGMENT_FRAMES], plain["rgb"])
    np.testing.assert_array_equal(batch["mask"][:, :SEGMENT_FRAMES], plain["mask"])
    assert not np.any(batch["mask"][:, SEGMENT_FRAMES:]) and not np.any(batch["rgb"][:, SEGMENT_FRAMES:])
    np.testing.assert_array_equal(batch["label_weights"], plain["label_weights"])


def test_fine_tune_from_a_video_level_workdir(rated, video_workdir, tmp_path):
    config = segment_config(rated, **{"model.init_workdir": video_workdir, "train.num_steps": 3})
    task = tasks.build_task(config)
    model = task.build_model()
    task.warm_start(model)
    _, source = tasks.restore_model(load_config(video_workdir), video_workdir)
    for mine, theirs in zip(model.weights, source.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

    results, tuned = tasks.train(config, str(tmp_path / "w"), strategy=one_device(), log=quiet, task=task)
    ratings = read_segment_ratings(rated[1], TINY_CLASSES)
    assert results["num_videos"] == sum(len(r) for r in ratings.values())  # one row per rated pair
    # The evaluation's MAP is the challenge's MAP of a submission that ranks every rated segment.
    scored = {}
    for ids, probs, _, weights in task.predict_rated_segments(tuned, rated[1]):
        for segment, row, w in zip(ids, probs, weights):
            c = int(np.argmax(w))
            scored.setdefault(c, []).append((-float(row[c]), segment))
    submission = {c: [s for _, s in sorted(pairs)] for c, pairs in scored.items()}
    assert results["map"] == pytest.approx(segment_map(submission, ratings)["map"], abs=1e-12)


def test_a_workdir_of_another_model_is_one_line(rated, video_workdir, tmp_path):
    other = segment_config(rated, **{"model.init_workdir": video_workdir, "model.moe.num_mixtures": 3})
    task = tasks.build_task(other)
    with pytest.raises(ConfigError, match=rf"model.init_workdir={video_workdir} holds another model \(.*config.json: "
                                          r"model.moe.num_mixtures=2 there, 3 here\); expected a workdir trained "
                                          r"with this config's task, model"):
        task.warm_start(task.build_model())
    with pytest.raises(ConfigError, match=r"model.moe.num_mixtures=2 there, 3 here"):
        type(task).prepare_config(other, log=quiet)  # before bin/train writes the config
    nowhere = str(tmp_path / "nowhere")
    task = tasks.build_task(segment_config(rated, **{"model.init_workdir": nowhere}))
    with pytest.raises(CheckpointError, match=rf"model.init_workdir={nowhere}: no such directory"):
        task.warm_start(task.build_model())
    frame_workdir = tmp_path / "frame"
    frame_workdir.mkdir()
    (frame_workdir / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match=r"has no checkpoint in checkpoints/"):
        tasks.build_task(segment_config(rated, **{"model.init_workdir": str(frame_workdir)})).warm_start(None)


@pytest.mark.slow
def test_frame_level_fine_tune(rated, tmp_path):
    """A frame-level classifier trained on whole videos, then on rated segments padded to max_frames."""
    train = write_tiny_yt8m(str(tmp_path / "frames"), num_videos=16, num_files=1)
    source = str(tmp_path / "source")
    tasks.train(tiny_config(train, **{"train.num_steps": 2}), source, strategy=one_device(), log=quiet)
    config = tiny_config(rated[0], rated[1], **{"data.segment_labels": True, "data.max_frames": RATED_FRAMES,
                                                "model.init_workdir": source, "train.num_steps": 2})
    results, _ = tasks.train(config, str(tmp_path / "tuned"), strategy=one_device(), log=quiet)
    assert results["step"] == 2 and 0.0 <= results["map"] <= 1.0 and not math.isnan(results["gap"])


def test_levels_without_a_rated_pair_are_left_out(rated, monkeypatch):
    task = tasks.build_task(segment_config(rated))
    weights = np.eye(TINY_CLASSES)[[0, 1, 0, 1]]  # classes 0 and 1 rated; 2..4 (level 1) never
    levels = types.SimpleNamespace(levels=lambda: np.array([0, 0, 1, 1, 1]))  # a Taxonomy's per-class levels
    monkeypatch.setattr(task, "taxonomy", lambda pattern: levels)
    monkeypatch.setattr(task, "predict_rated_segments", lambda model, pattern: iter(
        [(["a:0", "a:5", "b:0", "b:5"], np.random.default_rng(0).random((4, TINY_CLASSES)),
          weights * np.array([[1.0], [0.0], [0.0], [1.0]]), weights)]))
    results = task.evaluate(None, rated[1])
    assert results["num_videos"] == 4 and results["level_0/num_videos"] == 4
    assert not any(k.startswith("level_1/") for k in results) and not any(math.isnan(v) for v in results.values())
