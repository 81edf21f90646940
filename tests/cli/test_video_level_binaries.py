"""The video-level and segment workflows as a user runs them: bin/train → evaluate → export → predict, then a
fine-tune on rated segments → predict --segments → evaluate_segments, and the wrong kind of record."""
import csv
import json
import os

import numpy as np
import pytest

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.conftest import REPO_ROOT
from tests.yt8m_video_fixtures import RATED_FRAMES, TINY_CLASSES, write_tiny_rated, write_tiny_video_level
from vt_keras import tasks
from vt_keras.data import yt8m
from vt_keras.data.taxonomy import Taxonomy
from vt_keras.train.checkpoints import load_config



def write_config_file(path, **kwargs):
    lines = ["import sys", f"sys.path.insert(0, {REPO_ROOT!r})",
             "from tests.yt8m_video_fixtures import tiny_video_config", "def get_config():",
             f"    return tiny_video_config(**{kwargs!r})"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_bins")
    video = root / "video"
    train = write_tiny_video_level(str(video), num_videos=48, prefix="train")
    test = write_tiny_video_level(str(video), num_videos=10, num_files=1, prefix="test", seed=1)
    Taxonomy.from_shape((1, 4)).save(str(video / "taxonomy.json"))  # 5 classes: a root and 4 leaves
    rated = (write_tiny_rated(str(root / "rated"), num_videos=16, prefix="validate"),
             write_tiny_rated(str(root / "rated"), num_videos=12, seed=1, prefix="test"))
    config = write_config_file(root / "cfg.py", train_pattern=train, eval_pattern=test,
                               **{"data.taxonomy": "auto"})
    return dict(root=root, train=train, test=test, rated=rated, config=config)


@pytest.fixture(scope="module")
def video_run(data):
    workdir = str(data["root"] / "moe")
    proc = run_bin("train", f"--config={data['config']}", f"--workdir={workdir}", "--config.train.num_steps=30",
                   "--strategy=one")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_train_evaluate_export_predict(data, video_run, tmp_path):
    workdir, trained = video_run
    assert "step 30/30" in trained.stdout and os.path.isdir(os.path.join(workdir, "export"))
    evaluated = run_bin("evaluate", f"--workdir={workdir}", f"--output={tmp_path / 'eval.json'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(tmp_path / "eval.json") as f:
        metrics = json.load(f)
    assert metrics["num_videos"] == 10 and metrics["level_1/num_videos"] > 0 and "level 1" in evaluated.stdout
    assert metrics["gap"] > 0.9  # the label is readable from mean_rgb

    export_dir = str(tmp_path / "export" / "1")
    assert run_bin("export", f"--workdir={workdir}", f"--export_dir={export_dir}").returncode == 0
    out = tmp_path / "pred.csv"
    predicted = run_bin("predict", f"--export_dir={export_dir}", f"--data={data['test']}", f"--output={out}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == 11

    task, model = tasks.restore_model(load_config(workdir), workdir)
    batch = next(iter(yt8m.video_dataset(data["test"], 10, features=task.features, num_classes=TINY_CLASSES)))
    probs = np.asarray(model(task.model_inputs(batch), training=False))
    for (video_id, pairs), vid, row in zip(rows[1:], batch["id"].numpy(), probs):
        assert video_id == vid.decode()
        values = pairs.split(" ")
        classes, scores = [int(c) for c in values[0::2]], [float(s) for s in values[1::2]]
        assert classes == list(np.argsort(-row, kind="stable"))
        # %g keeps 6 significant digits.
        np.testing.assert_allclose(scores, row[classes], rtol=1e-5)


def assert_distinct_scores(scores_by_class, rtol=1e-5):
    """Rankings made in two processes agree by construction only when no two scores are within rounding."""
    for c, values in scores_by_class.items():
        values = np.sort(np.asarray(values))
        assert np.all(np.diff(values) > rtol * np.abs(values[1:])), (c, values)


@pytest.mark.slow
def test_fine_tune_on_rated_segments_then_submit_and_score(data, video_run, tmp_path):
    source, _ = video_run
    validate, test = data["rated"]
    workdir = str(tmp_path / "segments")
    tuned = run_bin("train", f"--config={data['config']}", f"--workdir={workdir}", "--strategy=one",
                    "--config.data.segment_labels=true", f"--config.data.train_pattern={validate}",
                    f"--config.data.eval_pattern={test}", f"--config.model.init_workdir={source}",
                    "--config.train.num_steps=6", "--config.data.taxonomy=")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)

    submission = tmp_path / "submission.csv"
    predicted = run_bin("predict", f"--export_dir={os.path.join(workdir, 'export')}", f"--data={test}",
                        f"--output={submission}", "--segments", f"--max_frames={RATED_FRAMES}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    scored = run_bin("evaluate_segments", f"--data={test}", f"--submission={submission}")
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads(scored.stdout.strip().splitlines()[-1])

    task, model = tasks.restore_model(load_config(workdir), workdir)
    by_class = {}
    for _, probs, _, weights in task.predict_rated_segments(model, test):
        for row, w in zip(probs, weights):
            by_class.setdefault(int(np.argmax(w)), []).append(float(row[np.argmax(w)]))
    assert_distinct_scores(by_class)
    # The training's evaluation (rated pairs, in process) and the challenge's MAP of the export's submission.
    assert result["map"] == pytest.approx(metrics["map"], abs=1e-12) and result["rated"] == metrics["num_videos"]


@pytest.mark.slow
def test_video_scores_rank_every_segment_of_a_video_alike(data, video_run, tmp_path):
    """`--segment_scores=video`: each segment takes its video's score (the mean of all its frames)."""
    workdir, _ = video_run
    test = data["rated"][1]
    out = tmp_path / "video_scores.csv"
    proc = run_bin("predict", f"--export_dir={os.path.join(workdir, 'export')}", f"--data={test}", f"--output={out}",
                   "--segments", "--segment_scores=video", f"--max_frames={RATED_FRAMES}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    _, model = tasks.restore_model(load_config(workdir), workdir)
    batch = next(iter(yt8m.frame_dataset(test, 64, features=(("rgb", 8), ("audio", 4)), max_frames=RATED_FRAMES,
                                         num_classes=TINY_CLASSES)))
    mask = batch["mask"].numpy()[:, :, None]
    means = {f"mean_{n}": (batch[n].numpy() * mask).sum(1) / mask.sum(1) for n in ("rgb", "audio")}
    scores = np.asarray(model(means, training=False))
    assert_distinct_scores({c: scores[:, c] for c in range(TINY_CLASSES)})
    segments, rows = [], []
    for i, (vid, frames) in enumerate(zip(batch["id"].numpy(), batch["num_frames"].numpy())):
        for start in range(0, int(frames) - 4, 5):
            segments.append(f"{vid.decode()}:{start}")
            rows.append(i)
    expected = ["Class,Segments"]
    for c in range(TINY_CLASSES):
        order = np.argsort(-scores[rows, c], kind="stable")  # ties (one video) keep the reading order
        expected.append(f"{c}," + " ".join(segments[j] for j in order))
    assert out.read_text().splitlines() == expected


def test_records_of_the_other_kind_are_one_line(data, tmp_path):
    proc = run_bin("train", "--config=configs/yt8m/late_fusion.py", f"--workdir={tmp_path / 'f'}", "--strategy=one",
                   f"--config.data.train_pattern={data['train']}", f"--config.data.eval_pattern={data['test']}",
                   "--config.data.num_classes=5", "--noexport")
    assert_one_line_error(proc, "(a video-level tf.train.Example)", "this config reads frame-level records",
                          "configs/yt8m/video_moe.py")
    proc = run_bin("train", f"--config={data['config']}", f"--workdir={tmp_path / 'v'}", "--strategy=one",
                   f"--config.data.train_pattern={data['rated'][0]}", "--noexport")
    assert_one_line_error(proc, "(a frame-level tf.train.SequenceExample)", "this config reads video-level records",
                          "--config.data.segment_labels=true")


def test_a_warm_start_from_another_model_writes_nothing(data, video_run, tmp_path):
    source, _ = video_run
    workdir = tmp_path / "tuned"
    args = (f"--config={data['config']}", f"--workdir={workdir}", "--strategy=one", "--config.data.segment_labels=true",
            f"--config.data.train_pattern={data['rated'][0]}", f"--config.data.eval_pattern={data['rated'][1]}",
            f"--config.model.init_workdir={source}", "--config.train.num_steps=2", "--noexport")
    proc = run_bin("train", *args, "--config.model.moe.num_mixtures=3")
    assert_one_line_error(proc, f"model.init_workdir={source} holds another model",
                          "model.moe.num_mixtures=2 there, 3 here")
    # No config.json left behind: the corrected command then runs in the same workdir.
    assert not workdir.exists()
    proc = run_bin("train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
