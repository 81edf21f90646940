"""bin/convert_features: MediaPipe YouTube-8M extractor output → YouTube-8M records → bin/predict."""
import csv

import numpy as np
import pytest
import tensorflow as tf

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.export_fixtures import CLASSES, export_frame_model
from vt_keras.data import yt8m
from vt_keras.data.mediapipe import convert_features
from vt_keras.errors import ConfigError, DataError

RGB, AUDIO = "RGB/feature/floats", "AUDIO/feature/floats"
STEP = 4 / 255  # one quantization step


def extractor_output(rng, frames, audio_frames=None, dims=(1024, 128)):
    """A SequenceExample as MediaPipe's extractor writes it: float lists per second, timestamps, no id, no labels."""
    example = tf.train.SequenceExample()
    example.context.feature["clip/data_path"].bytes_list.value.append(b"/videos/holiday.mp4")
    values = {}
    for key, dim, count in ((RGB, dims[0], frames), (AUDIO, dims[1], audio_frames or frames)):
        values[key] = rng.uniform(-2.0, 2.0, (count, dim)).astype(np.float32)
        values[key][0, :3] = [-2.5, 2.5, 0.0]  # beyond the range: clipped, as the released data
        stamp = example.feature_lists.feature_list[key.replace("floats", "timestamp")]
        for t, row in enumerate(values[key]):
            example.feature_lists.feature_list[key].feature.add().float_list.value.extend(row.tolist())
            stamp.feature.add().int64_list.value.append(t * 1_000_000)
    return example, values


def _read_frames(path, dims=(1024, 128), max_frames=400):
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    with yt8m.data_errors():
        out = yt8m.parse_frame_example(tf.constant(records), (("rgb", dims[0]), ("audio", dims[1])), max_frames,
                                       labels_key=None)
    return {k: v.numpy() for k, v in out.items()}


def test_frame_level_round_trip_within_one_quantization_step(tmp_path, rng):
    example, values = extractor_output(rng, 6)
    (tmp_path / "holiday.pb").write_bytes(example.SerializeToString())  # a bare proto file
    written = convert_features(str(tmp_path / "holiday.pb"), str(tmp_path / "out.tfrecord"))
    assert written == [("holiday", 6)]
    out = _read_frames(str(tmp_path / "out.tfrecord"))
    assert out["id"].tolist() == [b"holiday"] and out["num_frames"].tolist() == [6]
    for name, key in (("rgb", RGB), ("audio", AUDIO)):
        got, want = out[name][0, :6].astype(np.float64), np.clip(values[key], -2, 2).astype(np.float64)
        assert np.max(np.abs(got - want)) <= STEP
        # Exactly the released data's codes: round((clip(x, -2, 2) + 2) * 255 / 4), from float64.
        codes = np.round((want + 2) * 255 / 4)
        np.testing.assert_allclose(got, codes * 4 / 255 + 4 / 512 - 2, atol=1e-6)
    record = tf.train.SequenceExample.FromString(next(iter(tf.data.TFRecordDataset(str(tmp_path / "out.tfrecord"))))
                                                 .numpy())
    assert list(record.context.feature["labels"].int64_list.value) == []


def test_tfrecord_input_long_videos_and_video_level(tmp_path, rng):
    examples = [extractor_output(rng, 305, dims=(8, 4)), extractor_output(rng, 4, audio_frames=3, dims=(8, 4))]
    with tf.io.TFRecordWriter(str(tmp_path / "two.tfrecord")) as writer:
        for example, _ in examples:
            writer.write(example.SerializeToString())
    written = convert_features(str(tmp_path / "two.tfrecord"), str(tmp_path / "frames.tfrecord"))
    assert written == [("two-0", 300), ("two-1", 3)]  # the first 300 frames; the shorter list's length
    out = _read_frames(str(tmp_path / "frames.tfrecord"), dims=(8, 4))
    assert out["num_frames"].tolist() == [300, 3]
    assert np.max(np.abs(out["rgb"][0, :300] - np.clip(examples[0][1][RGB][:300], -2, 2))) <= STEP

    convert_features(str(tmp_path / "two.tfrecord"), str(tmp_path / "video.tfrecord"), video_level=True)
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "video.tfrecord"))]
    with yt8m.data_errors():
        video = yt8m.parse_video_example(tf.constant(records), (("mean_rgb", 8), ("mean_audio", 4)), labels_key=None)
    for row in range(2):
        n = out["num_frames"][row]
        np.testing.assert_allclose(video["mean_rgb"][row], out["rgb"][row, :n].astype(np.float64).mean(0), atol=1e-6)
        np.testing.assert_allclose(video["mean_audio"][row], out["audio"][row, :n].astype(np.float64).mean(0),
                                   atol=1e-6)


def test_bad_inputs_are_data_errors(tmp_path, rng):
    (tmp_path / "garbage.pb").write_bytes(b"\xff\xff\xff not a proto")
    with pytest.raises(DataError, match=r"garbage.pb': expected a serialized tf.train.SequenceExample .* found bytes"):
        convert_features(str(tmp_path / "garbage.pb"), str(tmp_path / "o.tfrecord"))
    example, _ = extractor_output(rng, 2, dims=(8, 4))
    del example.feature_lists.feature_list[AUDIO]
    (tmp_path / "no_audio.pb").write_bytes(example.SerializeToString())
    with pytest.raises(DataError, match=r"no_audio.pb': expected the float feature list 'AUDIO/feature/floats' "
                                        r"\(one vector per frame\), found feature lists 'AUDIO/feature/timestamp', "
                                        r"'RGB/feature/floats', 'RGB/feature/timestamp'"):
        convert_features(str(tmp_path / "no_audio.pb"), str(tmp_path / "o.tfrecord"))
    (tmp_path / "a.pb").write_bytes(extractor_output(rng, 2, dims=(8, 4))[0].SerializeToString())
    with pytest.raises(ConfigError, match="--video_id=x names one video; the input holds 2 videos"):
        convert_features(f"{tmp_path}/a.pb,{tmp_path}/no_audio.pb", str(tmp_path / "o.tfrecord"), video_id="x")


def test_own_video_to_prediction_with_the_binaries(tmp_path, rng):
    example, _ = extractor_output(rng, 9, dims=(8, 4))
    (tmp_path / "my_video.pb").write_bytes(example.SerializeToString())
    converted = run_bin("convert_features", f"--input={tmp_path}/*.pb", f"--output={tmp_path / 'mine.tfrecord'}")
    assert converted.returncode == 0, converted.stderr[-3000:]
    export_dir = str(tmp_path / "export" / "1")
    export_frame_model(export_dir)
    predicted = run_bin("predict", f"--export_dir={export_dir}", f"--data={tmp_path / 'mine.tfrecord'}",
                        f"--output={tmp_path / 'mine.csv'}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(tmp_path / "mine.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and rows[1][0] == "my_video"
    assert len(rows[1][1].split(" ")) == 2 * CLASSES


def test_binary_bad_inputs_are_one_line(tmp_path):
    (tmp_path / "garbage.pb").write_bytes(b"\x08\x96\x01 not a sequence example \xff")
    assert_one_line_error(run_bin("convert_features", f"--input={tmp_path / 'garbage.pb'}",
                                  f"--output={tmp_path / 'o.tfrecord'}"), "garbage.pb", "expected a serialized")
    assert_one_line_error(run_bin("convert_features", f"--input={tmp_path}/none-*.pb",
                                  f"--output={tmp_path / 'o.tfrecord'}"), "--input=", "matches no files")
