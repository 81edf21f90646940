"""Tests of the one tf.data builder: skip_batches, and the corrupt-file check in every reader."""
import numpy as np
import pytest

from vt_keras.data import yt8m
from vt_keras.data.checks import data_counters, reset_data_counters
from vt_keras.data.pipeline import record_dataset
from vt_keras.data.video_text import data_errors, make_video_text_example, video_text_dataset
from vt_keras.data.video_text import write_video_text_records
from vt_keras.errors import ConfigError, DataError

SMALL = (("rgb", 6), ("audio", 2))


def _write_frames(tmp_path, rng, num_files=3, per_file=5):
    for f in range(num_files):
        yt8m.write_frame_records(str(tmp_path / f"t-{f}.tfrecord"), [
            {"id": f"v{f}_{i}", "labels": [i % 4], **{n: rng.uniform(-1, 1, (3, d)) for n, d in SMALL}}
            for i in range(per_file)])
    return str(tmp_path / "t-*.tfrecord")


def _ids(dataset, count):
    return [b["id"].numpy().tolist() for b in dataset.take(count)]


@pytest.mark.parametrize("skip", [1, 4, 7])
def test_skip_batches_continues_the_same_shuffled_repeated_stream(tmp_path, rng, skip):
    pattern = _write_frames(tmp_path, rng)  # 15 records: batches of 4 cross epochs and files

    def dataset(skip_batches):
        return yt8m.frame_dataset(pattern, 4, features=SMALL, max_frames=3, num_classes=4, shuffle=True,
                                  repeat=True, drop_remainder=True, seed=11, shuffle_buffer_size=6,
                                  skip_batches=skip_batches)

    full = _ids(dataset(0), skip + 6)
    assert len({tuple(b) for b in full}) > 1  # shuffled: the batches differ
    assert _ids(dataset(skip), 6) == full[skip:]


def test_skipped_batches_are_never_parsed(tmp_path, rng):
    # The first batch holds a record the parser rejects: skipping it before the parse map means no error.
    examples = [{"id": f"v{i}", "labels": [1], **{n: rng.uniform(-1, 1, (2, d)) for n, d in SMALL}}
                for i in range(4)]
    examples[0]["rgb"] = rng.uniform(-1, 1, (2, 5))  # 5 bytes per frame, 6 expected
    path = str(tmp_path / "a.tfrecord")
    yt8m.write_frame_records(path, examples)
    kwargs = dict(features=SMALL, max_frames=2, num_classes=4)
    with pytest.raises(DataError, match="record 'v0': feature list 'rgb' expected 6 bytes per frame, found 5"):
        list(yt8m.iterate(yt8m.frame_dataset(path, 2, **kwargs)))
    got = [b["id"].numpy().tolist() for b in yt8m.iterate(yt8m.frame_dataset(path, 2, skip_batches=1, **kwargs))]
    assert got == [[b"v2", b"v3"]]


def test_bad_counts_are_config_errors(tmp_path, rng):
    pattern = _write_frames(tmp_path, rng, num_files=1, per_file=1)
    with pytest.raises(ConfigError, match=r"skip_batches: expected an integer >= 0, found -1"):
        record_dataset(pattern, 2, lambda r, n: r, skip_batches=-1)
    with pytest.raises(ConfigError, match=r"batch_size: expected an integer >= 1, found 0"):
        record_dataset(pattern, 0, lambda r, n: r)


def _video_text_files(tmp_path, rng):
    def video(name, clips):
        return make_video_text_example(name, rng.uniform(-1, 1, (clips, 4)), [f"{name} {j}" for j in range(clips)])

    write_video_text_records(str(tmp_path / "good.tfrecord"), [video("g0", 2), video("g1", 3)])
    path = tmp_path / "bad.tfrecord"
    write_video_text_records(str(path), [video("b0", 2), video("b1", 2), video("b2", 2)])
    path.write_bytes(path.read_bytes()[:-25])  # the last record is cut short
    return str(tmp_path / "*.tfrecord")


def test_video_text_reader_detects_truncated_files_and_skips_them_on_request(tmp_path, rng):
    pattern = _video_text_files(tmp_path, rng)
    with pytest.raises(DataError, match=r"^file '.*bad\.tfrecord' is truncated or corrupt: .*\(after 2 records\)$"):
        with data_errors():
            list(video_text_dataset(pattern, 2, clip_dim=4))
    reset_data_counters()
    with data_errors():
        ids = sorted(i for b in video_text_dataset(pattern, 2, clip_dim=4, skip_corrupt_records=True)
                     for i in b["id"].numpy().tolist())
    assert ids == [b"b0", b"b1", b"g0", b"g1"]
    assert data_counters() == {"skipped_corrupt_files": 1}


def test_video_text_skip_batches(tmp_path, rng):
    pattern = _video_text_files(tmp_path, rng).replace("*", "good")
    full = [b["id"].numpy().tolist() for b in video_text_dataset(pattern, 1, clip_dim=4)]
    skipped = [b["id"].numpy().tolist() for b in video_text_dataset(pattern, 1, clip_dim=4, skip_batches=1)]
    assert skipped == full[1:] == [[b"g1"]]
    assert np.asarray(full).size == 2


def test_every_epoch_is_a_permutation_and_no_batch_repeats_a_record(tmp_path, rng):
    pattern = _write_frames(tmp_path, rng)  # 15 records in 3 files; a shuffle buffer larger than the data
    ds = yt8m.frame_dataset(pattern, 5, features=SMALL, max_frames=3, num_classes=4, shuffle=True, repeat=True,
                            drop_remainder=True, seed=2, shuffle_buffer_size=64)
    ids = [i for b in ds.take(12) for i in b["id"].numpy().tolist()]
    epochs = [ids[k:k + 15] for k in range(0, 60, 15)]
    everything = sorted(f"v{f}_{i}".encode() for f in range(3) for i in range(5))
    assert all(sorted(epoch) == everything for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 4  # reshuffled every epoch
