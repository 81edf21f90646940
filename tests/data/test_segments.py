"""Tests of the 2019 segment ratings: parsing and checks, rated-pair examples, every segment of a video."""
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data import yt8m
from vt_keras.data.segments import read_segment_ratings, segment_dataset, video_segments
from vt_keras.errors import DataError

SMALL = (("rgb", 6), ("audio", 2))
CLASSES = 7


def _example(rng, video_id, frames, ratings=None, labels=(1,)):
    """A frame-level example dict; `ratings` are `(start, class, score)` triples."""
    example = {"id": video_id, "labels": list(labels), **{n: rng.uniform(-1.9, 1.9, (frames, d)) for n, d in SMALL}}
    if ratings is not None:
        example.update(segment_start_times=[r[0] for r in ratings], segment_labels=[r[1] for r in ratings],
                       segment_scores=[r[2] for r in ratings])
    return example


def _parse(examples, max_frames=30, **kwargs):
    records = [yt8m.make_frame_example(e["id"], e["labels"], {n: e[n] for n, _ in SMALL},
                                       segments={k: e[k] for k in ("segment_labels", "segment_start_times",
                                                                   "segment_scores") if k in e}
                                       ).SerializeToString() for e in examples]
    with yt8m.data_errors():
        return yt8m.parse_frame_example(tf.constant(records), SMALL, max_frames, CLASSES, segments=True,
                                        filenames=tf.constant(["s.tfrecord"] * len(records)), **kwargs)


def test_ratings_are_parsed_beside_the_frames(rng):
    out = _parse([_example(rng, "a", 12, [(0, 3, 1.0), (5, 3, 0.0), (5, 6, 1.0)]), _example(rng, "b", 7)])
    assert out["segment_labels"].to_list() == [[3, 3, 6], []]
    assert out["segment_start_times"].to_list() == [[0, 5, 5], []]
    assert out["segment_scores"].to_list() == [[1.0, 0.0, 1.0], []]
    assert out["segment_labels"].dtype == tf.int32 and out["segment_scores"].dtype == tf.float32


@pytest.mark.parametrize("ratings, message", [
    (dict(segment_start_times=[0, 5], segment_labels=[1], segment_scores=[1.0, 0.0]),
     "segment_labels, segment_start_times and segment_scores hold 1, 2 and 2 values; expected one of each per "
     "rated (segment, class) pair"),
    (dict(segment_start_times=[0, 10], segment_labels=[1, 2], segment_scores=[1.0, 0.0]),
     "segment start time 10 outside the video's 8 frames read (max_frames=30); expected 0 <= start < 8"),
    (dict(segment_start_times=[-5], segment_labels=[1], segment_scores=[1.0]),
     "segment start time -5 outside the video's 8 frames read (max_frames=30); expected 0 <= start < 8"),
    (dict(segment_start_times=[0, 5], segment_labels=[2, 7], segment_scores=[1.0, 0.0]),
     "segment_labels: class id 7 out of range; expected 0 <= class id < num_classes=7"),
    (dict(segment_start_times=[0], segment_labels=[2], segment_scores=[2.0]),
     "segment_scores: score 2 outside [0, 1]; expected 1.0 (present) or 0.0 (absent)"),
])
def test_bad_ratings_are_one_line_errors(rng, ratings, message):
    bad = _example(rng, "bad", 8)
    bad.update(ratings)
    record = tf.train.SequenceExample()
    record.CopyFrom(yt8m.make_frame_example("bad", [1], {n: bad[n] for n, _ in SMALL}))
    record.context.feature["segment_start_times"].int64_list.value.extend(ratings["segment_start_times"])
    record.context.feature["segment_labels"].int64_list.value.extend(ratings["segment_labels"])
    record.context.feature["segment_scores"].float_list.value.extend(ratings["segment_scores"])
    good = yt8m.make_frame_example("good", [1], {n: rng.uniform(-1, 1, (8, d)) for n, d in SMALL})
    with pytest.raises(DataError) as info:
        with yt8m.data_errors():
            yt8m.parse_frame_example(tf.constant([good.SerializeToString(), record.SerializeToString()]), SMALL,
                                     30, CLASSES, segments=True, filenames=tf.constant(["g", "s.tfrecord"]))
    assert str(info.value) == f"file 's.tfrecord', record 'bad': {message}"


def test_a_start_past_max_frames_names_max_frames(rng):
    with pytest.raises(DataError, match=r"start time 10 outside the video's 10 frames read \(max_frames=10\)"):
        _parse([_example(rng, "long", 20, [(10, 1, 1.0)])], max_frames=10)


def test_writer_refuses_half_the_rating_keys(rng):
    example = _example(rng, "a", 5)
    example["segment_labels"] = [1]
    with pytest.raises(DataError, match="segment ratings: expected all of"):
        yt8m.write_frame_records("/dev/null", [example])


def _write(tmp_path, rng):
    examples = [_example(rng, "a", 12, [(0, 3, 1.0), (5, 3, 0.0), (10, 6, 1.0)]),  # tail 10..11: 2 frames
                _example(rng, "b", 9),  # unrated
                _example(rng, "c", 5, [(0, 1, 0.0)])]
    path = str(tmp_path / "rated.tfrecord")
    yt8m.write_frame_records(path, examples)
    return path, examples


def test_segment_dataset_yields_one_example_per_rated_pair(tmp_path, rng):
    path, examples = _write(tmp_path, rng)
    batches = list(yt8m.iterate(segment_dataset(path, 3, features=SMALL, num_classes=CLASSES, max_frames=30)))
    got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    assert got["id"].tolist() == [b"a", b"a", b"a", b"c"]
    assert got["segment_start"].tolist() == [0, 5, 10, 0] and got["segment_class"].tolist() == [3, 3, 6, 1]
    expected_labels = np.zeros((4, CLASSES))
    expected_labels[[0, 2], [3, 6]] = 1.0  # the score at the rated class, 0 elsewhere
    np.testing.assert_array_equal(got["labels"], expected_labels)
    weights = np.zeros((4, CLASSES))
    weights[[0, 1, 2, 3], [3, 3, 6, 1]] = 1.0
    np.testing.assert_array_equal(got["label_weights"], weights)
    np.testing.assert_array_equal(got["num_frames"], [5, 5, 2, 5])
    np.testing.assert_array_equal(got["mask"][2], [True, True, False, False, False])
    for row, (video, start) in enumerate([(0, 0), (0, 5), (0, 10), (2, 0)]):
        for name, _ in SMALL:
            frames = yt8m.dequantize(yt8m.quantize(examples[video][name][start:start + 5]))
            np.testing.assert_allclose(got[name][row, :len(frames)], frames, atol=1e-6)
            assert np.all(got[name][row, len(frames):] == 0.0)


def test_pooled_segments_are_frame_means_for_video_level_models(tmp_path, rng):
    path, examples = _write(tmp_path, rng)
    batch = next(iter(segment_dataset(path, 8, features=SMALL, num_classes=CLASSES, pooled=True)))
    assert {"mean_rgb", "mean_audio"} <= set(batch) and "rgb" not in batch and "mask" not in batch
    for row, (video, start) in enumerate([(0, 0), (0, 5), (0, 10), (2, 0)]):
        frames = yt8m.dequantize(yt8m.quantize(examples[video]["rgb"][start:start + 5])).astype(np.float64)
        np.testing.assert_allclose(batch["mean_rgb"][row], frames.mean(0), atol=1e-6)


def test_segment_dataset_shuffles_repeats_and_skips(tmp_path, rng):
    path, _ = _write(tmp_path, rng)

    def ids(skip):
        ds = segment_dataset(path, 2, features=SMALL, num_classes=CLASSES, shuffle=True, repeat=True,
                             drop_remainder=True, seed=4, skip_batches=skip)
        return [(b["id"].numpy().tolist(), b["segment_start"].numpy().tolist()) for b in ds.take(5)]

    full = ids(0)
    assert ids(2)[:3] == full[2:]
    assert {s for _, starts in full for s in starts} == {0, 5, 10}


def test_video_segments_drop_the_partial_tail():
    frames = np.arange(2 * 30 * 2, dtype=np.float32).reshape(2, 30, 2)
    batch = {"id": tf.constant(["v23", "v4"]), "num_frames": tf.constant([23, 4]), "rgb": tf.constant(frames)}
    ids, starts, (rgb,) = video_segments(batch, (("rgb", 2),))
    assert ids.numpy().tolist() == [b"v23"] * 4 and starts.numpy().tolist() == [0, 5, 10, 15]
    np.testing.assert_array_equal(rgb.numpy(), frames[0, :20].reshape(4, 5, 2))
    _, _, (pooled,) = video_segments(batch, (("rgb", 2),), pooled=True)
    np.testing.assert_allclose(pooled.numpy(), frames[0, :20].reshape(4, 5, 2).mean(1))


def test_read_segment_ratings(tmp_path, rng):
    path, _ = _write(tmp_path, rng)
    assert read_segment_ratings(path, num_classes=CLASSES) == {
        3: {"a:0": 1.0, "a:5": 0.0}, 6: {"a:10": 1.0}, 1: {"c:0": 0.0}}
    with pytest.raises(DataError, match="class id 6 out of range; expected 0 <= class id < num_classes=5"):
        read_segment_ratings(path, num_classes=5)
