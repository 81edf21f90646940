"""The binaries as a user runs them: train → evaluate → export → predict, and bad input."""
import csv
import json
import os

import pytest
import tensorflow as tf

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.conftest import REPO_ROOT
from tests.yt8m_fixtures import TINY_CLASSES, tiny_config, write_tiny_yt8m
from vt_keras.errors import DataError
from vt_keras import tasks



def write_config_file(path, **kwargs):
    lines = ["import sys", f"sys.path.insert(0, {REPO_ROOT!r})", "from tests.yt8m_fixtures import tiny_config",
             "def get_config():", f"    return tiny_config(**{kwargs!r})"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train = write_tiny_yt8m(str(root), num_videos=32, prefix="train")
    test = write_tiny_yt8m(str(root), num_videos=10, num_files=1, prefix="test", seed=1)
    return train, test


@pytest.mark.slow
def test_train_evaluate_export_predict(data, tmp_path):
    train, test = data
    config = write_config_file(tmp_path / "cfg.py", train_pattern=train)
    workdir = str(tmp_path / "w")
    trained = run_bin("train", f"--config={config}", f"--workdir={workdir}", "--config.train.num_steps=6",
                      "--strategy=one")
    assert trained.returncode == 0, trained.stderr[-3000:]
    for name in ("config.json", "metrics.json", "checkpoints", "train", "export"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert "step 6/6" in trained.stdout and "examples/sec" in trained.stdout
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["step"] == 6 and 0.0 <= metrics["gap"] <= 1.0

    evaluated = run_bin("evaluate", f"--workdir={workdir}", f"--data={test}",
                        f"--output={tmp_path / 'eval.json'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(tmp_path / "eval.json") as f:
        assert json.load(f)["num_videos"] == 10
    assert "gap" in evaluated.stdout.lower()

    exported = run_bin("export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'export' / '1'}")
    assert exported.returncode == 0, exported.stderr[-3000:]

    out = tmp_path / "pred.csv"
    predicted = run_bin("predict", f"--export_dir={tmp_path / 'export' / '1'}", f"--data={test}",
                        f"--output={out}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"]
    assert len(rows) == 11
    for video_id, pairs in rows[1:]:
        assert video_id.startswith("test")
        values = pairs.split(" ")
        classes, scores = [int(c) for c in values[0::2]], [float(s) for s in values[1::2]]
        assert len(classes) == TINY_CLASSES and sorted(classes) == list(range(TINY_CLASSES))
        assert scores == sorted(scores, reverse=True)


def test_unknown_config_key_is_one_line(tmp_path):
    proc = run_bin("train", "--config=configs/yt8m/late_fusion.py", "--config.train.nokey=3",
                   f"--workdir={tmp_path}")
    assert_one_line_error(proc, "--config.train.nokey", "unknown config key 'train.nokey'", "batch_size")


def test_missing_config_file_is_one_line(tmp_path):
    proc = run_bin("train", "--config=configs/nothing_here.py", f"--workdir={tmp_path}")
    assert_one_line_error(proc, "nothing_here.py")


def test_pattern_matching_no_file_is_one_line(tmp_path):
    config = write_config_file(tmp_path / "cfg.py", train_pattern=str(tmp_path / "none-*.tfrecord"))
    proc = run_bin("train", f"--config={config}", f"--workdir={tmp_path / 'w'}", "--strategy=one")
    assert_one_line_error(proc, "none-*.tfrecord", "matches no files")


def test_corrupt_record_stops_naming_the_file_or_is_skipped(data, tmp_path):
    train, _ = data
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for i, path in enumerate(sorted(tf.io.gfile.glob(train))):
        with open(path, "rb") as f:
            blob = f.read()
        (bad_dir / f"train-{i}.tfrecord").write_bytes(blob if i else blob[: len(blob) // 2])
    config = write_config_file(tmp_path / "cfg.py", train_pattern=str(bad_dir / "train-*.tfrecord"),
                               eval_pattern=train)
    proc = run_bin("train", f"--config={config}", f"--workdir={tmp_path / 'w'}", "--strategy=one",
                   "--noexport")
    assert_one_line_error(proc, "train-0.tfrecord", "truncated or corrupt")
    assert not os.path.exists(tmp_path / "w" / "metrics.json")
    skipped = run_bin("train", f"--config={config}", f"--workdir={tmp_path / 'w2'}", "--strategy=one",
                      "--noexport", "--skip_corrupt_records")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skip" in (skipped.stdout + skipped.stderr).lower()


def test_wrong_feature_size_in_training_names_file_and_key(data, tmp_path):
    train, _ = data
    config = tiny_config(train, **{"data.features": (("rgb", 9), ("audio", 4))})
    with pytest.raises(DataError, match=r"train-0000\d-of-00002.tfrecord.*rgb.*9.*8"):
        tasks.train(config, str(tmp_path / "w"), strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                   log=lambda *a: None)


def test_label_out_of_range_names_the_label(data, tmp_path):
    train, _ = data
    config = tiny_config(train, **{"data.num_classes": 3})
    with pytest.raises(DataError, match=r"label \d+.*num_classes"):
        tasks.train(config, str(tmp_path / "w"), strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                   log=lambda *a: None)


def test_evaluate_without_a_trained_workdir_is_one_line(tmp_path):
    proc = run_bin("evaluate", f"--workdir={tmp_path / 'nothing'}")
    assert_one_line_error(proc, "config.json")


def test_predict_with_a_wrong_export_dir_is_one_line(data, tmp_path):
    proc = run_bin("predict", f"--export_dir={tmp_path}", f"--data={data[1]}", f"--output={tmp_path / 'x.csv'}")
    assert_one_line_error(proc, "not a SavedModel")


def test_compare_prints_the_runs_side_by_side_and_names_bad_workdirs(tmp_path):
    for name, gap in (("a", 0.25), ("b", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"gap_error": gap, "level_0/gap_error": 1.0}))
    table = tmp_path / "table.md"
    proc = run_bin("compare", f"--workdirs={tmp_path}/*", "--metrics=gap_error,level_*/gap_error",
                   f"--output={table}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["| workdir | gap_error | level_0/gap_error |", "|---|---|---|",
                                        "| a | 0.25 | 1.00 |", "| b | 0.50 | 1.00 |"]
    assert table.read_text() == proc.stdout
    assert_one_line_error(run_bin("compare", f"--workdirs={tmp_path / 'nowhere'}"),
                          f"{tmp_path / 'nowhere' / 'metrics.json'} does not exist")
    (tmp_path / "b" / "metrics.json").write_text("{\"gap_error\": 0.5")  # a run killed while writing
    assert_one_line_error(run_bin("compare", f"--workdirs={tmp_path}/*"),
                          f"{tmp_path / 'b' / 'metrics.json'} is not valid JSON")
    assert_one_line_error(run_bin("compare", "--workdirs= , "), "--workdirs=' , ' names no workdir")


def test_bad_config_argument_is_one_line(tmp_path):
    proc = run_bin("train", "--config=configs/yt8m/classifier.py:aggregator=lstm", f"--workdir={tmp_path}")
    assert_one_line_error(proc, "classifier.py:aggregator=lstm", "unknown aggregator 'lstm'",
                          "pool, netvlad, rnn, transformer")
    proc = run_bin("train", "--config=configs/yt8m/classifier.py:aggregator=pool,fusion=cm_gated",
                   f"--workdir={tmp_path}")
    assert_one_line_error(proc, "pooling has no cross-modal form")


# Each binary's own flags, as its --help must list them (a sample per binary).
HELP_FLAGS = {
    "train": ("--config", "--workdir", "--strategy", "--num_cpu_devices", "--skip_corrupt_records"),
    "evaluate": ("--workdir", "--data", "--taxonomy"),
    "export": ("--workdir", "--export_dir"),
    "predict": ("--export_dir", "--data", "--output", "--segments", "--segment_classes", "--top_segments"),
    "convert_features": ("--input", "--output", "--video_level", "--video_id"),
    "evaluate_segments": ("--data", "--submission", "--top_n"),
    "make_data": ("--output_dir", "--num_videos"),
    "compare": ("--workdirs", "--metrics"),
    "search": ("--export_dir", "--data"),
    "plot_attention": ("--workdir", "--data", "--video_id", "--output"),
    "plot_alignment": ("--workdir", "--data", "--output"),
}


def test_every_binary_has_a_help_that_explains_its_flags():
    assert sorted(HELP_FLAGS) == sorted(n for n in os.listdir(os.path.join(REPO_ROOT, "bin")))
    for name, expected in HELP_FLAGS.items():
        proc = run_bin(name, "--help", timeout=120)
        text = proc.stdout + proc.stderr
        assert proc.returncode in (0, 1), (name, text[-500:])  # absl ends --help with status 1
        # The module's description, not the wrapper's one-line pointer to it.
        assert f"bin/{name}" in text.splitlines()[0] and "see vt_keras/cli" not in text, (name, text[:300])
        for flag in expected:
            assert f"  {flag}" in text or f"  --[no]{flag[2:]}" in text, (name, flag, text)
