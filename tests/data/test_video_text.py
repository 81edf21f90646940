"""Tests of the video–text record format, parser and dataset."""
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data.video_text import (
    data_errors,
    make_video_text_example,
    parse_video_text_example,
    read_captions,
    video_text_dataset,
    write_video_text_records,
)
from vt_keras.errors import DataError

CLIP_DIM = 4


def _video(rng, index, num_clips):
    clips = rng.uniform(-1.5, 1.5, (num_clips, CLIP_DIM)).astype(np.float32)
    captions = [f"video {index} clip {j}" for j in range(num_clips)]
    return f"v{index}", clips, captions


def _write(path, videos, **kwargs):
    write_video_text_records(str(path), [make_video_text_example(*v, **kwargs) for v in videos])
    return str(path)


def _dequantize64(q):
    return np.asarray(q, np.float64) * 4.0 / 255.0 + 4.0 / 512.0 - 2.0


def test_float_round_trip_with_padding_truncation_and_experts(rng):
    videos = [_video(rng, 0, 2), _video(rng, 1, 5), _video(rng, 2, 3)]
    videos[2][2][1] = ""  # an empty caption is not a valid caption
    experts = [{"a": rng.normal(size=3), "b": [float(i)]} for i in range(3)]
    records = [make_video_text_example(*v, expert_features=e).SerializeToString()
               for v, e in zip(videos, experts)]
    batch = parse_video_text_example(records, CLIP_DIM, max_clips=3, expert_features=("a", "b"))
    max_clips = 3
    assert batch["id"].numpy().tolist() == [b"v0", b"v1", b"v2"]
    np.testing.assert_array_equal(batch["num_clips"], [2, 3, 3])
    for i, (_, clips, captions) in enumerate(videos):
        n = min(len(clips), max_clips)
        expected = np.zeros((max_clips, CLIP_DIM), np.float32)
        expected[:n] = clips[:n]
        np.testing.assert_array_equal(batch["clips"][i], expected)
        np.testing.assert_array_equal(batch["clip_mask"][i], np.arange(max_clips) < n)
        padded = [c.encode() for c in captions[:n]] + [b""] * (max_clips - n)
        assert batch["captions"][i].numpy().tolist() == padded
        np.testing.assert_array_equal(batch["caption_mask"][i],
                                      [j < n and padded[j] != b"" for j in range(max_clips)])
        np.testing.assert_allclose(batch["expert/a"][i], experts[i]["a"], rtol=1e-6)
    np.testing.assert_array_equal(batch["expert/b"][:, 0], [0.0, 1.0, 2.0])
    assert batch["clips"].dtype == tf.float32 and batch["clip_mask"].dtype == tf.bool
    assert batch["num_clips"].dtype == tf.int32


def test_quantized_clips_match_youtube8m_formulas(rng):
    clips = np.array([[-3.0, -2.0, 0.0, 2.5], [0.5, -0.25, 1.0, 1.99]], np.float32)
    ex = make_video_text_example("q", clips, ["a", "b"], clip_encoding="quantized")
    stored = [np.frombuffer(f.bytes_list.value[0], np.uint8)
              for f in ex.feature_lists.feature_list["clip"].feature]
    expected_q = np.round((np.clip(clips.astype(np.float64), -2, 2) + 2) * 255 / 4)
    np.testing.assert_array_equal(np.stack(stored), expected_q)
    batch = parse_video_text_example([ex.SerializeToString()], CLIP_DIM, 3,
                                     clip_encoding="quantized")
    np.testing.assert_allclose(batch["clips"][0, :2], _dequantize64(expected_q), atol=1e-6)
    np.testing.assert_array_equal(batch["clips"][0, 2], 0.0)

    # The dequantization formula by hand (see tests/data/test_yt8m.py) on hand-written bytes.
    hand = tf.train.SequenceExample()
    hand.context.feature["id"].bytes_list.value.append(b"h")
    hand.feature_lists.feature_list["clip"].feature.add().bytes_list.value.append(
        bytes([0, 255, 127, 128]))
    hand.feature_lists.feature_list["caption"].feature.add().bytes_list.value.append(b"c")
    batch = parse_video_text_example([hand.SerializeToString()], CLIP_DIM, 1,
                                     clip_encoding="quantized")
    np.testing.assert_allclose(batch["clips"][0, 0],
                               [-1.9921875, 2.0078125, -3.06e-5, 0.0156556], atol=1e-6)


def test_dataset_order_batches_remainder_and_shuffle(tmp_path, rng):
    videos = [_video(rng, i, 2 + i % 3) for i in range(7)]
    _write(tmp_path / "a-0.tfrecord", videos[:4])
    _write(tmp_path / "a-1.tfrecord", videos[4:])
    pattern = str(tmp_path / "a-*.tfrecord")
    all_ids = sorted(f"v{i}".encode() for i in range(7))
    ds = video_text_dataset(pattern, 3, clip_dim=CLIP_DIM, max_clips=4)
    ids = [b["id"].numpy().tolist() for b in ds]
    assert [len(x) for x in ids] == [3, 3, 1]
    assert sorted(sum(ids, [])) == all_ids
    assert ids == [b["id"].numpy().tolist() for b in ds]  # deterministic
    runs = []
    for _ in range(2):
        ds = video_text_dataset(pattern, 3, clip_dim=CLIP_DIM, drop_remainder=True,
                                repeat=True, shuffle=True, seed=3)
        runs.append([b["id"].numpy().tolist() for b in ds.take(7)])
    assert runs[0] == runs[1]  # seeded
    assert {len(b) for b in runs[0]} == {3}
    assert set(sum(runs[0], [])) == set(all_ids)


@pytest.mark.parametrize("num_files", [1, 3])
def test_input_context_shards_disjoint_and_complete(tmp_path, rng, num_files):
    videos = [_video(rng, i, 2) for i in range(9)]
    for f in range(num_files):
        _write(tmp_path / f"s-{f}.tfrecord", videos[f::num_files])
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        ds = video_text_dataset(str(tmp_path / "s-*.tfrecord"), 4, clip_dim=CLIP_DIM,
                                input_context=ctx)
        seen.append([i for b in ds for i in b["id"].numpy().tolist()])
    assert seen[0] and seen[1]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(f"v{i}".encode() for i in range(9))


def test_read_captions(tmp_path, rng):
    videos = [_video(rng, i, 2) for i in range(3)]
    pattern = _write(tmp_path / "c.tfrecord", videos)
    assert list(read_captions(pattern)) == [c for v in videos for c in v[2]]


def _first_batch(path, **kwargs):
    kwargs.setdefault("clip_dim", CLIP_DIM)
    with data_errors():
        return next(iter(video_text_dataset(path, 4, **kwargs)))


def test_no_matching_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"file pattern '.*nothing-\*' matches no files"):
        video_text_dataset(str(tmp_path / "nothing-*"), 2, clip_dim=CLIP_DIM)


def test_wrong_clip_dim_names_file_key_expected_and_found(tmp_path, rng):
    path = _write(tmp_path / "f.tfrecord", [_video(rng, 0, 2)])
    with pytest.raises(DataError) as info:
        _first_batch(path, clip_dim=6)
    message = str(info.value)
    assert path in message and "'clip'" in message
    assert "clip_dim=6" in message and "found 4" in message and "\n" not in message
    record = make_video_text_example(*_video(rng, 0, 2), clip_encoding="quantized")
    with pytest.raises(DataError, match=r"q\.tfrecord.*clip_dim=5 bytes per clip, found 4"):
        parse_video_text_example([record.SerializeToString()], 5, 2, clip_encoding="quantized",
                                 sources=["q.tfrecord"])


def test_missing_keys_are_data_errors(rng):
    ex = make_video_text_example(*_video(rng, 0, 2))
    no_id = tf.train.SequenceExample()
    no_id.CopyFrom(ex)
    del no_id.context.feature["id"]
    no_caption = tf.train.SequenceExample()
    no_caption.CopyFrom(ex)
    del no_caption.feature_lists.feature_list["caption"]
    no_clip = tf.train.SequenceExample()
    no_clip.CopyFrom(ex)
    del no_clip.feature_lists.feature_list["clip"]
    cases = [(no_id, r"context key 'id': expected 1 bytes value, found 0"),
             (no_caption, r"'caption': expected one caption per clip \(2\), found 0"),
             (no_clip, r"'clip': expected at least 1 clip, found 0")]
    good = ex.SerializeToString()
    for record, pattern in cases:
        with pytest.raises(DataError, match="bad.tfrecord: .*" + pattern):
            parse_video_text_example([good, record.SerializeToString()], CLIP_DIM, 2,
                                     sources=["ok.tfrecord", "bad.tfrecord"])
    with pytest.raises(DataError, match=r"record 0: context key 'expert/z': expected 3 floats"):
        parse_video_text_example([good], CLIP_DIM, 2, expert_features={"z": 3})


def test_wrong_encoding_and_garbage_are_data_errors(tmp_path, rng):
    record = make_video_text_example(*_video(rng, 0, 2), clip_encoding="quantized")
    with pytest.raises(DataError, match=r"check clip_encoding.*q\.tfrecord.*clip"):
        parse_video_text_example([record.SerializeToString()], CLIP_DIM, 2,
                                 sources=["q.tfrecord"])  # read as float
    path = _write(tmp_path / "q.tfrecord", [_video(rng, 0, 2)], clip_encoding="quantized")
    with pytest.raises(DataError, match="clip_encoding: expected one of"):
        video_text_dataset(path, 2, clip_dim=CLIP_DIM, clip_encoding="int8")
    garbage = tmp_path / "g.tfrecord"
    garbage.write_bytes(b"not a record at all")
    # The YouTube-8M readers' per-file check: the file is named, and so is where reading stopped.
    with pytest.raises(DataError, match=r"^file '.*g\.tfrecord' is truncated or corrupt: .* from byte 0 of 19"):
        _first_batch(str(garbage))
    with pytest.raises(DataError, match="one caption per clip"):
        make_video_text_example("x", np.zeros((2, 3)), ["only one"])
