"""bin/predict --segments and bin/evaluate_segments as a user runs them, and their bad-input lines."""
import json

import numpy as np
import pytest

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.export_fixtures import CLASSES, FEATURES, export_frame_model, export_video_model, segment_scores
from vt_keras.data import yt8m
from vt_keras.data.segments import read_segment_ratings
from vt_keras.data.submission import read_submission
from vt_keras.metrics.segments import segment_map

LENGTHS = [23, 4, 10, 17, 5, 12]  # 4, 0, 2, 3, 1, 2 complete segments


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    rng = np.random.default_rng(0)
    examples = []
    for i, frames in enumerate(LENGTHS):
        example = {"id": f"vid{i}", "labels": [], **{n: rng.uniform(-1.9, 1.9, (frames, d)) for n, d in FEATURES}}
        starts = list(range(0, frames - 4, 5))
        if starts:
            example.update(segment_start_times=starts + starts[:1], segment_labels=[1] * len(starts) + [4],
                           segment_scores=[float(rng.random() < 0.5) for _ in starts] + [1.0])
        examples.append(example)
    data = str(root / "rated.tfrecord")
    yt8m.write_frame_records(data, examples)
    frame_export, video_export = str(root / "frame" / "1"), str(root / "video" / "1")
    frame_model = export_frame_model(frame_export)
    video_model = export_video_model(video_export)
    classes = root / "classes.csv"
    classes.write_text("Class\n4\n1\n")
    return dict(root=root, data=data, examples=examples, frame_export=frame_export, frame_model=frame_model,
                video_export=video_export, video_model=video_model, classes=str(classes))


def expected_ranking(setup, model_scores, classes, top):
    """Every segment of every video, scored in this process, sorted per class (no ties in float scores)."""
    ids, frames = [], {n: [] for n, _ in FEATURES}
    for example in setup["examples"]:
        for start in range(0, len(example["rgb"]) - 4, 5):
            ids.append(f"{example['id']}:{start}")
            for name, _ in FEATURES:
                frames[name].append(yt8m.dequantize(yt8m.quantize(example[name][start:start + 5])))
    scores = model_scores({n: np.stack(v) for n, v in frames.items()})
    return {c: [ids[i] for i in np.argsort(-scores[:, c], kind="stable")[:top]] for c in classes}, len(ids)


@pytest.mark.slow
def test_predict_segments_then_evaluate(setup, tmp_path):
    out = tmp_path / "submission.csv"
    proc = run_bin("predict", f"--export_dir={setup['frame_export']}", f"--data={setup['data']}", f"--output={out}",
                   "--segments", f"--segment_classes={setup['classes']}", "--top_segments=7", "--batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected, count = expected_ranking(setup, lambda f: segment_scores(setup["frame_model"], f), (1, 4), 7)
    assert count == 12
    lines = out.read_text().splitlines()
    assert lines[0] == "Class,Segments" and len(lines) == 3
    assert lines[1] == "1," + " ".join(expected[1]) and lines[2] == "4," + " ".join(expected[4])

    evaluated = run_bin("evaluate_segments", f"--data={setup['data']}", f"--submission={out}", "--top_n=5")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    last = json.loads(evaluated.stdout.strip().splitlines()[-1])
    result = segment_map(read_submission(str(out)), read_segment_ratings(setup["data"]), top_n=5)
    assert last["map"] == pytest.approx(result["map"]) and last["num_classes"] == result["num_classes"] == 2
    assert "MAP@5" in evaluated.stdout


@pytest.mark.slow
def test_video_level_export_scores_segment_means(setup, tmp_path):
    out = tmp_path / "video_submission.csv"
    proc = run_bin("predict", f"--export_dir={setup['video_export']}", f"--data={setup['data']}", f"--output={out}",
                   "--segments", "--top_segments=3")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def means(frames):
        return np.asarray(setup["video_model"]({f"mean_{n}": v.mean(1).astype(np.float32) for n, v in frames.items()}))

    expected, _ = expected_ranking(setup, means, range(CLASSES), 3)
    rows = out.read_text().splitlines()
    assert rows == ["Class,Segments"] + [f"{c}," + " ".join(expected[c]) for c in range(CLASSES)]


def test_bad_segment_inputs_are_one_line(setup, tmp_path):
    bad_classes = tmp_path / "classes.csv"
    bad_classes.write_text("3\n9\n")
    proc = run_bin("predict", f"--export_dir={setup['frame_export']}", f"--data={setup['data']}",
                   f"--output={tmp_path / 'x.csv'}", "--segments", f"--segment_classes={bad_classes}")
    assert_one_line_error(proc, "line 2", f"expected 0 <= class id < {CLASSES}", "found 9")


def test_bad_submission_and_unrated_data_are_one_line(setup, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("VideoId,LabelConfidencePairs\nv,1 0.5\n")
    assert_one_line_error(run_bin("evaluate_segments", f"--data={setup['data']}", f"--submission={bad}"),
                          "line 1: expected the header 'Class,Segments'", "VideoId,LabelConfidencePairs")
    good = tmp_path / "good.csv"
    good.write_text("Class,Segments\n1,vid0:0\n")
    unrated = str(tmp_path / "unrated.tfrecord")
    yt8m.write_frame_records(unrated, [{**setup["examples"][1], "id": "plain"}])
    assert_one_line_error(run_bin("evaluate_segments", f"--data={unrated}", f"--submission={good}"),
                          "no record has segment ratings")
