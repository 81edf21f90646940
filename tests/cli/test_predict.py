"""bin/predict with frame- and video-level exports, records of every release, and records it cannot serve."""
import csv

import numpy as np
import pytest

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.export_fixtures import CLASSES, FEATURES, VIDEO_FEATURES, export_frame_model, export_video_model
from vt_keras.data import yt8m


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    frame_export, video_export = str(root / "frame" / "1"), str(root / "video" / "1")
    export_frame_model(frame_export)
    export_video_model(video_export)
    return root, frame_export, video_export


def _frames(rng, frames=3, **dims):
    return {n: rng.uniform(-1.5, 1.5, (frames, dims.get(n, d))) for n, d in FEATURES}


def _rows(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_video_level_export_with_2017_and_2018_records(exports, tmp_path):
    _, _, video_export = exports
    rng = np.random.default_rng(1)
    for name, id_key in (("old", "video_id"), ("new", "id")):
        yt8m.write_video_records(str(tmp_path / f"{name}.tfrecord"), [
            {"id": f"{name}{i}", "labels": [], **{n: rng.normal(size=d) for n, d in VIDEO_FEATURES}}
            for i in range(2)], id_key=id_key)
    out = tmp_path / "pred.csv"
    proc = run_bin("predict", f"--export_dir={video_export}", f"--data={tmp_path}/*.tfrecord", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert rows[0] == ["VideoId", "LabelConfidencePairs"]
    assert sorted(r[0] for r in rows[1:]) == ["new0", "new1", "old0", "old1"]
    for _, pairs in rows[1:]:
        values = pairs.split(" ")
        assert sorted(int(c) for c in values[0::2]) == list(range(CLASSES))


def test_a_record_that_cannot_be_served_is_one_line(exports, tmp_path):
    _, frame_export, _ = exports
    rng = np.random.default_rng(2)
    path = str(tmp_path / "wrong.tfrecord")
    yt8m.write_frame_records(path, [{"id": "fine", "labels": [99], **_frames(rng)},
                                    {"id": "short", "labels": [], **_frames(rng, rgb=7)}])
    proc = run_bin("predict", f"--export_dir={frame_export}", f"--data={path}", f"--output={tmp_path / 'x.csv'}")
    assert_one_line_error(proc, f"file '{path}', record 'short': feature list 'rgb' expected 8 bytes per frame, "
                                "found 7")
    assert "Graph execution error" not in proc.stderr


def test_video_level_records_given_to_a_frame_level_export_say_so(exports, tmp_path):
    _, frame_export, _ = exports
    path = str(tmp_path / "video.tfrecord")
    yt8m.write_video_records(path, [{"id": "v", "labels": [], "mean_rgb": np.zeros(8), "mean_audio": np.zeros(4)}])
    proc = run_bin("predict", f"--export_dir={frame_export}", f"--data={path}", f"--output={tmp_path / 'x.csv'}")
    assert_one_line_error(proc, f"file '{path}', record 'v': feature list", "is missing or empty",
                          "no feature lists (a video-level tf.train.Example)")


def test_bad_flags_are_one_line(exports, tmp_path):
    _, frame_export, _ = exports
    assert_one_line_error(run_bin("predict", f"--export_dir={frame_export}", f"--data={tmp_path}/none-*.tfrecord",
                                  f"--output={tmp_path / 'x.csv'}"), "none-*.tfrecord", "matches no files")
