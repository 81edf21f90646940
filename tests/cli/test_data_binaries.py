"""bin/make_data and bin/export as a user runs them: what they write, and one line for bad input."""
import json
import os

import pytest

from tests.cli.binaries import assert_one_line_error, run_bin


def test_make_data_writes_every_kind_of_file(tmp_path):
    out = tmp_path / "yt8m"
    proc = run_bin("make_data", f"--output_dir={out}", "--num_videos=20", "--num_shards=1", "--max_frames=25")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["counts"] == {"train": 16, "validate": 2, "test": 2}
    for name in ("train-00000-of-00001.tfrecord", "video/train-00000-of-00001.tfrecord", "video/taxonomy.json",
                 "segment_classes.csv", "taxonomy.json"):
        assert os.path.exists(out / name) and name in proc.stdout, name
    assert all("segments" in v for v in manifest["videos"] if v["split"] != "train")


def test_make_data_video_text(tmp_path):
    proc = run_bin("make_data", "--kind=video_text", f"--output_dir={tmp_path / 'vt'}", "--num_videos=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.exists(tmp_path / "vt" / "manifest.json")


@pytest.mark.slow
def test_make_data_bad_input_is_one_line(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    assert_one_line_error(run_bin("make_data", f"--output_dir={tmp_path / 'full'}"), "is not empty", "--overwrite")
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(run_bin("make_data", f"--output_dir={tmp_path / 'a_file'}"), "is a file")
    assert_one_line_error(run_bin("make_data", f"--output_dir={tmp_path / 'n'}", "--num_videos=0"),
                          "num_videos", "expected >= 1")
    assert_one_line_error(run_bin("make_data", f"--output_dir={tmp_path / 'm'}", "--max_frames=5"),
                          "min_frames <= max_frames")
    assert_one_line_error(run_bin("make_data", f"--output_dir={tmp_path / 'k'}", "--kind=frames"), "--kind")


@pytest.mark.slow
def test_export_bad_input_is_one_line(tmp_path):
    assert_one_line_error(run_bin("export", f"--workdir={tmp_path / 'nothing'}", f"--export_dir={tmp_path / 'e'}"),
                          "config.json")
    (tmp_path / "e" / "1").mkdir(parents=True)
    (tmp_path / "e" / "1" / "saved_model.pb").write_bytes(b"an export being served")
    assert_one_line_error(run_bin("export", f"--workdir={tmp_path}", f"--export_dir={tmp_path / 'e' / '1'}"),
                          "is not empty", "new version directory", "--overwrite")
    assert (tmp_path / "e" / "1" / "saved_model.pb").read_bytes() == b"an export being served"
    assert_one_line_error(run_bin("export", f"--workdir={tmp_path}",
                                  f"--export_dir={tmp_path / 'e' / '1' / 'saved_model.pb'}"), "is a file")
