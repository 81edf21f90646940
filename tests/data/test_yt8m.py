"""Tests of YouTube-8M quantization, writers, parsers and datasets."""
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data import yt8m
from vt_keras.errors import DataError

SMALL = (("rgb", 12), ("audio", 4))


def _dequantize64(q):
    """The starter code's dequantization in float64: x = q * 4/255 + 4/512 - 2."""
    return np.asarray(q, np.float64) * 4.0 / 255.0 + 4.0 / 512.0 - 2.0


def _examples(rng, frames, features=SMALL, num_classes=10, prefix="v"):
    return [{"id": f"{prefix}{i}", "labels": sorted(rng.choice(num_classes, 2, replace=False).tolist()),
             **{name: rng.uniform(-2.2, 2.2, (n, dim)) for name, dim in features}}
            for i, n in enumerate(frames)]


def _read(pattern, batch_size=4, **kwargs):
    kwargs.setdefault("features", SMALL)
    kwargs.setdefault("num_classes", 10)
    batches = list(yt8m.iterate(yt8m.frame_dataset(pattern, batch_size, **kwargs)))
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}


def _parse(path, **kwargs):
    """Parses a whole file eagerly in one batch (no tf.data tracing: fast)."""
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    kwargs.setdefault("features", SMALL)
    kwargs.setdefault("num_classes", 10)
    with yt8m.data_errors():
        out = yt8m.parse_frame_example(tf.constant(records), filenames=tf.constant([path] * len(records)), **kwargs)
    return {k: v.numpy() for k, v in out.items()}


def test_dequantize_reference_values():
    # x = q * 4/255 + 4/512 - 2, by hand: q = 0: 0.0078125 - 2 = -1.9921875; q = 255: 4 + 0.0078125 - 2 =
    # 2.0078125; q = 127: 1.9921569 + 0.0078125 - 2 = -3.06e-5; q = 128: 2.0078431 + 0.0078125 - 2 = 0.0156556.
    q = np.array([0, 255, 127, 128], np.uint8)
    expected = [-1.9921875, 2.0078125, -3.06e-5, 0.0156556]
    np.testing.assert_allclose(yt8m.dequantize(q), expected, atol=1e-6)
    np.testing.assert_allclose(yt8m.dequantize(tf.constant(q)).numpy(), expected, atol=1e-6)
    all_q = np.arange(256)
    np.testing.assert_allclose(yt8m.dequantize(all_q), _dequantize64(all_q), atol=5e-7)


def test_quantize_round_trip_and_clipping():
    q = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(yt8m.quantize(yt8m.dequantize(q)), q)
    np.testing.assert_array_equal(yt8m.quantize(yt8m.dequantize(tf.constant(q))).numpy(), q)
    x = np.array([-5.0, -2.0, 0.0, 1.0, 2.0, 7.0])
    expected = np.round((np.clip(x, -2, 2) + 2) * 255 / 4).astype(np.uint8)
    np.testing.assert_array_equal(yt8m.quantize(x), expected)
    np.testing.assert_array_equal(yt8m.quantize(tf.constant(x)).numpy(), expected)


def test_frame_round_trip_values_padding_mask_truncation(tmp_path, rng):
    frames = [3, 9, 6, 12, 1]  # two videos longer than max_frames
    examples = _examples(rng, frames)
    examples[0]["labels"] = [4, 4, 1]  # a repeated label is still a single 1
    yt8m.write_frame_records(str(tmp_path / "a.tfrecord"), examples[:3])
    yt8m.write_frame_records(str(tmp_path / "b.tfrecord"), examples[3:])
    out = _read(f"{tmp_path}/a.tfrecord,{tmp_path}/b.tfrecord", max_frames=8, l2_normalize=False)
    assert out["rgb"].shape == (5, 8, 12) and out["audio"].shape == (5, 8, 4)
    assert out["rgb"].dtype == np.float32 and out["num_frames"].dtype == np.int32
    by_id = {vid.decode(): i for i, vid in enumerate(out["id"])}
    assert sorted(by_id) == [e["id"] for e in examples]
    for example in examples:
        i, n = by_id[example["id"]], min(len(example["rgb"]), 8)
        assert out["num_frames"][i] == n
        np.testing.assert_array_equal(out["mask"][i], np.arange(8) < n)
        for name, dim in SMALL:
            want = _dequantize64(np.round((np.clip(example[name][:n], -2, 2) + 2) * 255 / 4))
            np.testing.assert_allclose(out[name][i, :n], want, atol=1e-6)
            assert np.all(out[name][i, n:] == 0.0)
        labels = np.zeros(10)
        labels[list(example["labels"])] = 1.0
        np.testing.assert_array_equal(out["labels"][i], labels)


def test_l2_normalize_concatenates_features_per_frame(tmp_path, rng):
    examples = _examples(rng, [4, 2])
    path = str(tmp_path / "a.tfrecord")
    yt8m.write_frame_records(path, examples)
    plain, normed = _parse(path, max_frames=5), _parse(path, max_frames=5, l2_normalize=True)
    both = np.concatenate([plain["rgb"], plain["audio"]], axis=-1).astype(np.float64)
    norm = np.linalg.norm(both, axis=-1, keepdims=True)
    want = np.where(norm > 0, both / np.maximum(norm, 1e-30), 0.0)
    got = np.concatenate([normed["rgb"], normed["audio"]], axis=-1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(got[~plain["mask"]] == 0.0)


def test_one_modality_and_custom_feature_names(tmp_path, rng):
    features = (("flow", 7),)
    examples = _examples(rng, [2, 5, 3], features=features)
    path = str(tmp_path / "flow.tfrecord")
    yt8m.write_frame_records(path, examples)
    out = _read(path, features=features, max_frames=4)
    assert set(out) == {"id", "flow", "num_frames", "mask", "labels"}
    assert out["flow"].shape == (3, 4, 7)
    np.testing.assert_array_equal(out["num_frames"], [2, 4, 3])


def test_frame_count_mismatch_uses_minimum_and_counts(tmp_path, rng):
    example = _examples(rng, [5])[0]
    example["audio"] = example["audio"][:3]
    path = str(tmp_path / "m.tfrecord")
    yt8m.write_frame_records(path, [example])
    yt8m.reset_data_counters()
    out = _parse(path, max_frames=6)
    assert out["num_frames"][0] == 3
    assert np.all(out["rgb"][0, 3:] == 0.0) and np.all(out["rgb"][0, :3] != 0.0)
    assert yt8m.data_counters().get("frame_count_mismatches") == 1


def test_video_round_trip_with_custom_id_key(tmp_path, rng):
    features = (("mean_rgb", 6), ("mean_audio", 3))
    examples = [{"id": f"v{i}", "labels": [i, 7], "mean_rgb": rng.normal(size=6), "mean_audio": rng.normal(size=3)}
                for i in range(5)]
    path = str(tmp_path / "video.tfrecord")
    yt8m.write_video_records(path, examples, id_key="video_id")
    batches = list(yt8m.iterate(yt8m.video_dataset(path, 2, features=features, num_classes=8, id_key="video_id")))
    assert [b["mean_rgb"].shape[0] for b in batches] == [2, 2, 1]
    got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    np.testing.assert_array_equal(got["id"], [e["id"].encode() for e in examples])
    for i, e in enumerate(examples):
        np.testing.assert_array_equal(got["mean_rgb"][i], e["mean_rgb"].astype(np.float32))
        np.testing.assert_array_equal(got["mean_audio"][i], e["mean_audio"].astype(np.float32))
        assert np.flatnonzero(got["labels"][i]).tolist() == sorted(set(e["labels"]))


def test_repeat_drop_remainder_gives_static_batches(tmp_path, rng):
    path = str(tmp_path / "a.tfrecord")
    yt8m.write_frame_records(path, _examples(rng, [2, 3, 4]))
    ds = yt8m.frame_dataset(path, 2, features=SMALL, num_classes=10, max_frames=4, repeat=True,
                            drop_remainder=True, shuffle=True, seed=3)
    assert ds.element_spec["rgb"].shape.as_list() == [2, 4, 12]
    ids = [vid for b in ds.take(6) for vid in b["id"].numpy()]
    assert len(ids) == 12 and set(ids) == {b"v0", b"v1", b"v2"}


@pytest.mark.parametrize("num_files", [3, 1])  # file sharding, then record sharding
def test_two_input_pipelines_cover_every_record_once(tmp_path, rng, num_files):
    examples = _examples(rng, [2] * 9)
    for k, chunk in enumerate(np.array_split(np.arange(9), num_files)):
        yt8m.write_frame_records(str(tmp_path / f"s{k}.tfrecord"), [examples[i] for i in chunk])
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        out = _read(f"{tmp_path}/s*.tfrecord", input_context=ctx, shuffle=True, max_frames=2)
        seen.append(sorted(out["id"].tolist()))
    assert seen[0] and seen[1]
    assert sorted(seen[0] + seen[1]) == sorted(e["id"].encode() for e in examples)


def test_pattern_matching_nothing_names_the_pattern(tmp_path, rng):
    yt8m.write_frame_records(str(tmp_path / "a.tfrecord"), _examples(rng, [2]))
    with pytest.raises(DataError, match="'.*nothing-\\*.tfrecord' matches no files"):
        yt8m.frame_dataset(f"{tmp_path}/a.tfrecord,{tmp_path}/nothing-*.tfrecord", 2)


def _bad_record_error(tmp_path, rng, edit, through_dataset=False):
    examples = _examples(rng, [2, 3, 2])
    edit(examples[1])
    path = str(tmp_path / "bad.tfrecord")
    yt8m.write_frame_records(path, examples)
    with pytest.raises(DataError) as info:
        _read(path, max_frames=4) if through_dataset else _parse(path, max_frames=4)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"file '{path}', record 'v1': ")
    return message


def test_missing_feature_list_names_file_and_key(tmp_path, rng):
    message = _bad_record_error(tmp_path, rng, lambda e: e.pop("audio"), through_dataset=True)
    assert "feature list 'audio' is missing" in message


def test_wrong_frame_size_names_expected_and_found(tmp_path, rng):
    message = _bad_record_error(tmp_path, rng, lambda e: e.update(rgb=rng.uniform(-1, 1, (3, 11))))
    assert message.endswith("feature list 'rgb' expected 12 bytes per frame, found 11")


@pytest.mark.parametrize("label", [10, -1])
def test_label_out_of_range_names_label_and_num_classes(tmp_path, rng, label):
    message = _bad_record_error(tmp_path, rng, lambda e: e.update(labels=[2, label]))
    assert message.endswith(f"label {label} out of range; expected 0 <= label < num_classes=10")


def test_wrong_video_feature_size(tmp_path, rng):
    path = str(tmp_path / "v.tfrecord")
    yt8m.write_video_records(path, [{"id": "x", "labels": [1], "mean_rgb": np.zeros(5), "mean_audio": np.zeros(3)}])
    ds = yt8m.video_dataset(path, 1, features=(("mean_rgb", 6), ("mean_audio", 3)), num_classes=4)
    with pytest.raises(DataError, match=r"v\.tfrecord', record 'x': feature 'mean_rgb' expected 6 floats, found 5"):
        list(yt8m.iterate(ds))


def test_parser_called_directly_names_the_record(rng):
    proto = yt8m.make_frame_example("abc", [12], {"rgb": np.zeros((2, 12)), "audio": np.zeros((2, 4))})
    with pytest.raises(DataError, match="^record 'abc': label 12 out of range"):
        with yt8m.data_errors():
            yt8m.parse_frame_example(tf.constant([proto.SerializeToString()]), SMALL, num_classes=10)


def _damaged_files(tmp_path, rng, damage):
    yt8m.write_frame_records(str(tmp_path / "good.tfrecord"), _examples(rng, [2, 2], prefix="g"))
    path = tmp_path / "bad.tfrecord"
    yt8m.write_frame_records(str(path), _examples(rng, [2, 2, 2], prefix="b"))
    data = bytearray(path.read_bytes())
    path.write_bytes(damage(data))
    return f"{tmp_path}/*.tfrecord"


def _flip_byte_200(data):
    data[200] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("damage", [lambda d: bytes(d[:-30]), _flip_byte_200], ids=["truncated", "corrupt"])
def test_damaged_file_stops_by_default_and_is_skipped_on_request(tmp_path, rng, damage):
    pattern = _damaged_files(tmp_path, rng, damage)
    damaged = r"^file '.*bad\.tfrecord' is truncated or corrupt: .* of \d+ \(after \d+ records\)$"
    with pytest.raises(DataError, match=damaged):
        _read(pattern, max_frames=2)
    yt8m.reset_data_counters()
    out = _read(pattern, max_frames=2, skip_corrupt_records=True)
    ids = set(out["id"].tolist())
    assert {b"g0", b"g1"} <= ids and b"b2" not in ids
    assert yt8m.data_counters() == {"skipped_corrupt_files": 1}


def _record_ends(data):
    """Byte offsets where each TFRecord frame ends: 8 bytes of length, 4 of its CRC, the data, 4 of CRC."""
    ends, at = [], 0
    while at < len(data):
        at += 8 + 4 + int.from_bytes(data[at:at + 8], "little") + 4
        ends.append(at)
    assert at == len(data)
    return ends


@pytest.mark.parametrize("kept", [20, 16, 0], ids=["mid-block", "block-edge", "first-record"])
def test_a_file_cut_inside_a_record_is_caught_after_the_records_before_it(tmp_path, rng, kept):
    """The reader counts its bytes in blocks of 16 records; the message counts the whole records read."""
    path = tmp_path / "cut.tfrecord"
    yt8m.write_frame_records(str(path), _examples(rng, [1] * 40, prefix="c"))
    data = path.read_bytes()
    ends = _record_ends(data)
    assert len(ends) == 40
    # Whole, the file is read in its order.
    out = _read(str(path), max_frames=1)
    assert [x.decode() for x in out["id"]] == [f"c{i}" for i in range(40)]
    cut = (ends[kept - 1] if kept else 0) + 10  # 10 bytes into record `kept`
    path.write_bytes(data[:cut])
    with pytest.raises(DataError, match=rf"^file '.*cut\.tfrecord' is truncated or corrupt: TFRecord data unreadable "
                                        rf"from byte {cut - 10} of {cut} \(after {kept} records\)$"):
        _read(str(path), max_frames=1)
    if kept:
        yt8m.reset_data_counters()
        out = _read(str(path), max_frames=1, skip_corrupt_records=True)
        assert [x.decode() for x in out["id"]] == [f"c{i}" for i in range(kept)]
        assert yt8m.data_counters() == {"skipped_corrupt_files": 1}
