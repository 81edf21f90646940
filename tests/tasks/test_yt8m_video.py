"""The video-level task: trains on tiny video-level records, evaluates, restores, exports, and names wrong records."""
import numpy as np
import pytest
import tensorflow as tf

from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from tests.yt8m_video_fixtures import TINY_CLASSES, tiny_video_config, write_tiny_video_level
from vt_keras import tasks
from vt_keras.data import yt8m
from vt_keras.errors import DataError
from vt_keras.tasks.yt8m_video import YT8MVideoClassification
from vt_keras.train.checkpoints import load_config


def quiet(*args):
    del args


def one_device():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_level")
    return (write_tiny_video_level(str(root), num_videos=64, prefix="train"),
            write_tiny_video_level(str(root), num_videos=24, num_files=1, prefix="validate", seed=1))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny video-level MoE trained 40 steps (the label is readable from mean_rgb)."""
    workdir = str(tmp_path_factory.mktemp("moe") / "w")
    config = tiny_video_config(*data, **{"train.num_steps": 40, "train.checkpoint_every": 0})
    task = tasks.build_task(config)
    results, model = tasks.train(config, workdir, strategy=one_device(), log=quiet, task=task)
    return task, results, model, workdir


def test_trains_and_beats_the_label_frequency_baseline(data, trained):
    task, results, _, _ = trained
    assert isinstance(task, YT8MVideoClassification)
    baseline = task.baseline(*data)
    assert results["num_videos"] == 24 and results["step"] == 40
    # Five balanced classes told apart by a prototype: the prior ranks them by frequency alone.
    assert results["gap"] > baseline["gap"] + 0.3 and results["hit_at_one"] > 0.8


def test_restored_model_and_export_give_the_trained_predictions(data, trained, tmp_path):
    task, _, model, workdir = trained
    _, restored = tasks.restore_model(load_config(workdir), workdir)
    batch = next(iter(yt8m.video_dataset(data[1], 24, features=task.features, num_classes=TINY_CLASSES)))
    inputs = task.model_inputs(batch)
    want = np.asarray(model(inputs, training=False))
    np.testing.assert_array_equal(np.asarray(restored(inputs, training=False)), want)

    export_dir = task.export(model, str(tmp_path / "export"))
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    records = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(data[1])).batch(24)))
    out = serve(example_bytes=records)
    assert [v.decode() for v in out["video_id"].numpy()] == [v.decode() for v in batch["id"].numpy()]
    top = np.argsort(-want, axis=1, kind="stable")[:, :TINY_CLASSES]
    np.testing.assert_array_equal(out["class_indexes"].numpy(), top)
    # The same float32 graph in a SavedModel: equal up to the order of float additions.
    np.testing.assert_allclose(out["predictions"].numpy(), np.take_along_axis(want, top, 1), rtol=1e-6)


def test_the_logistic_config_trains_too(data, tmp_path):
    config = tiny_video_config(*data, config_file="configs/yt8m/video_logistic.py",
                               **{"train.num_steps": 3, "train.checkpoint_every": 0})
    results, model = tasks.train(config, str(tmp_path / "w"), strategy=one_device(), log=quiet)
    assert model.get_layer("logistic") is not None and 0.0 <= results["gap"] <= 1.0


def test_records_of_the_other_kind_are_one_line_naming_the_kind_and_the_config(data, tmp_path):
    frame_files = write_tiny_yt8m(str(tmp_path / "frames"), num_videos=8, num_files=1)
    video_config = tiny_video_config(frame_files, **{"train.num_steps": 1})
    with pytest.raises(DataError, match=r"feature 'mean_rgb' expected 8 floats, found 0; the record has context keys "
                                        r"'id', 'labels' and feature lists 'audio', 'rgb' \(a frame-level "
                                        r"tf.train.SequenceExample\); this config reads video-level records; for "
                                        r"frame-level files use configs/yt8m/classifier.py"):
        tasks.train(video_config, str(tmp_path / "v"), strategy=one_device(), log=quiet)
    frame_config = tiny_config(data[0], **{"train.num_steps": 1})
    with pytest.raises(DataError, match=r"feature list 'rgb' is missing or empty.*\(a video-level "
                                        r"tf.train.Example\); this config reads frame-level records; for video-level "
                                        r"files use configs/yt8m/video_moe.py"):
        tasks.train(frame_config, str(tmp_path / "f"), strategy=one_device(), log=quiet)


def test_no_pattern_means_the_embedded_data_of_the_right_kind(tmp_path, monkeypatch):
    """Empty patterns: the default data's video-level files; with segment_labels, its rated frame-level splits."""
    from vt_keras.cli.common import load_config_file
    from vt_keras.data.taxonomy import Taxonomy
    from vt_keras.tasks import yt8m as yt8m_task

    frames, video = tmp_path / "default", tmp_path / "default" / "video"
    video.mkdir(parents=True)
    for root in (frames, video):
        Taxonomy.from_shape((2, 3)).save(str(root / "taxonomy.json"))
    monkeypatch.setattr(YT8MVideoClassification, "DEFAULT_DATA", staticmethod(lambda: str(video)))
    monkeypatch.setattr(yt8m_task.synthetic, "ensure_default_data", lambda: str(frames))
    config = load_config_file("configs/yt8m/video_moe.py")
    assert YT8MVideoClassification.prepare_config(config, log=quiet) is True
    assert (config.data.train_pattern, config.data.eval_pattern, config.data.test_pattern) == tuple(
        str(video / f"{split}-*.tfrecord") for split in ("train", "validate", "test"))
    assert config.data.num_classes == 8  # from the taxonomy beside the files
    segments = load_config_file("configs/yt8m/video_moe.py")
    segments.data.segment_labels = True
    assert YT8MVideoClassification.prepare_config(segments, log=quiet) is True
    assert (segments.data.train_pattern, segments.data.eval_pattern) == (str(frames / "validate-*.tfrecord"),
                                                                         str(frames / "test-*.tfrecord"))
