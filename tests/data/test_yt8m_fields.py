"""Tests of the records' context fields: the id of 2017 and 2018+ releases, optional labels, record kinds."""
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data import yt8m
from vt_keras.errors import ConfigError, DataError

SMALL = (("rgb", 6), ("audio", 2))
VIDEO = (("mean_rgb", 6), ("mean_audio", 2))


def _frame(rng, video_id, labels=(1,), id_key="id", frames=3):
    return yt8m.make_frame_example(video_id, labels, {n: rng.uniform(-1, 1, (frames, d)) for n, d in SMALL},
                                   id_key=id_key).SerializeToString()


def _video(rng, video_id, labels=(1,), id_key="id"):
    return yt8m.make_video_example(video_id, labels, {n: rng.normal(size=d) for n, d in VIDEO},
                                   id_key=id_key).SerializeToString()


def _parse_frames(records, **kwargs):
    kwargs = dict(dict(features=SMALL, max_frames=4, num_classes=5), **kwargs)
    with yt8m.data_errors():
        return yt8m.parse_frame_example(tf.constant(records), **kwargs)


def _parse_videos(records, **kwargs):
    kwargs = dict(dict(features=VIDEO, num_classes=5), **kwargs)
    with yt8m.data_errors():
        return yt8m.parse_video_example(tf.constant(records), **kwargs)


def test_auto_id_reads_2017_and_2018_records_side_by_side(rng):
    records = [_frame(rng, "new", id_key="id"), _frame(rng, "old", id_key="video_id")]
    assert _parse_frames(records)["id"].numpy().tolist() == [b"new", b"old"]
    videos = [_video(rng, "old", id_key="video_id"), _video(rng, "new")]
    assert _parse_videos(videos)["id"].numpy().tolist() == [b"old", b"new"]
    # An explicit key reads only that key.
    assert _parse_videos(videos[:1], id_key="video_id")["id"].numpy().tolist() == [b"old"]


def test_2017_files_through_the_datasets(tmp_path, rng):
    path = str(tmp_path / "old.tfrecord")
    yt8m.write_frame_records(path, [{"id": f"v{i}", "labels": [i], **{n: rng.uniform(-1, 1, (2, d))
                                                                      for n, d in SMALL}} for i in range(3)],
                             id_key="video_id")
    ids = [i for b in yt8m.iterate(yt8m.frame_dataset(path, 2, features=SMALL, max_frames=2, num_classes=5))
           for i in b["id"].numpy().tolist()]
    assert ids == [b"v0", b"v1", b"v2"]


def test_a_record_without_its_id_is_one_line(rng):
    no_id = tf.train.SequenceExample.FromString(_frame(rng, "x"))
    del no_id.context.feature["id"]
    with pytest.raises(DataError, match=r"^file 'f.tfrecord', a record without an id: no context key 'id' or "
                                        r"'video_id'; expected the video id under 'id' \(2018\+ releases\) or "
                                        r"'video_id' \(2017 release\)$"):
        _parse_frames([_frame(rng, "ok"), no_id.SerializeToString()], filenames=tf.constant(["g", "f.tfrecord"]))
    with pytest.raises(DataError, match=r"a record without an id: no context key 'video_id' \(id_key\)"):
        _parse_videos([_video(rng, "v")], id_key="video_id")
    two = tf.train.Example.FromString(_video(rng, "a"))
    two.features.feature["id"].bytes_list.value.append(b"b")
    with pytest.raises(DataError, match=r"record 'a': the id key holds 2 values; expected 1"):
        _parse_videos([two.SerializeToString()])
    with pytest.raises(ConfigError, match="id_key: expected 'auto' or a context key"):
        _parse_videos([_video(rng, "v")], id_key="")


@pytest.mark.parametrize("labels", [None, [], [3], [7, 4000]], ids=["no key", "empty", "in range", "beyond"])
def test_without_labels_key_any_labels_are_read_the_same(rng, labels):
    frame = yt8m.make_frame_example("v", labels or [], {n: np.full((2, d), 0.5) for n, d in SMALL})
    video = yt8m.make_video_example("v", labels or [], {n: np.full(d, 0.5) for n, d in VIDEO})
    if labels is None:
        del frame.context.feature["labels"]
        del video.features.feature["labels"]
    got = _parse_frames([frame.SerializeToString()], labels_key=None)
    assert "labels" not in got and got["id"].numpy().tolist() == [b"v"]
    np.testing.assert_allclose(got["rgb"][0, :2], yt8m.dequantize(yt8m.quantize(np.full((2, 6), 0.5))))
    got = _parse_videos([video.SerializeToString()], labels_key=None)
    assert "labels" not in got
    np.testing.assert_allclose(got["mean_rgb"][0], np.full(6, 0.5))


def test_frame_reader_given_a_video_level_record_says_what_it_found(rng):
    with pytest.raises(DataError) as info:
        _parse_frames([_frame(rng, "f"), _video(rng, "v")], filenames=tf.constant(["a", "video.tfrecord"]))
    message = str(info.value)
    assert message.startswith("file 'video.tfrecord', record 'v': feature list 'rgb' is missing or empty")
    assert "no feature lists (a video-level tf.train.Example)" in message and "'mean_rgb'" in message
    assert "\n" not in message


def test_video_reader_given_a_frame_level_record_says_what_it_found(tmp_path, rng):
    path = str(tmp_path / "frames.tfrecord")
    yt8m.write_frame_records(path, [{"id": "f", "labels": [1], **{n: rng.uniform(-1, 1, (2, d)) for n, d in SMALL}}])
    with pytest.raises(DataError) as info:
        list(yt8m.iterate(yt8m.video_dataset(path, 2, features=VIDEO, num_classes=5)))
    message = str(info.value)
    assert message.startswith(f"file '{path}', record 'f': feature 'mean_rgb' expected 6 floats, found 0; ")
    assert "feature lists 'rgb', 'audio'" in message or "feature lists 'audio', 'rgb'" in message
    assert message.endswith("(a frame-level tf.train.SequenceExample)")


def test_a_frame_level_record_missing_one_list_is_described_as_frame_level(rng):
    record = tf.train.SequenceExample.FromString(_frame(rng, "x"))
    del record.feature_lists.feature_list["audio"]
    with pytest.raises(DataError, match=r"record 'x': feature list 'audio' is missing or empty; .* found 0 frames; "
                                        r"the record has context keys .* and feature lists 'rgb' \(a frame-level"):
        _parse_frames([record.SerializeToString()])
