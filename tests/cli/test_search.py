"""bin/search on a tiny export, its errors, and the retrieval binaries end to end."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.conftest import REPO_ROOT
from tests.tasks.test_retrieval import tiny_config, write_tiny_data
from vt_keras.cli.search import search
from vt_keras.data.video_text_synthetic import make_video_text_data
from vt_keras.errors import ConfigError, DataError
from vt_keras.tasks.retrieval import RetrievalTask

QUERY = "Crack the eggs, then whisk"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny records and the export of an (untrained) model: (data, export_dir, task, model)."""
    root = tmp_path_factory.mktemp("search")
    data = write_tiny_data(str(root / "data"), num_videos=40)
    task = RetrievalTask(tiny_config(data, str(root / "cache")))
    model = task.build_model()
    export_dir = str(root / "export")
    task.export(model, export_dir)
    return data, export_dir, task, model


def in_process_ranking(task, model, pattern, query):
    """(ids, scores, captions) of every video, ranked by the model itself, best first."""
    batch = next(iter(task.dataset(pattern, 1000)))
    scores = np.asarray(model.embed_video(batch["clips"], batch["num_clips"])) @ np.asarray(
        model.embed_text(tf.constant([query])))[0]
    order = np.argsort(-scores, kind="stable")
    ids = [batch["id"].numpy()[i].decode() for i in order]
    captions = [[c.decode() for c, m in zip(batch["captions"].numpy()[i], batch["caption_mask"].numpy()[i]) if m]
                for i in order]
    return ids, scores[order], captions


def test_search_prints_the_videos_the_model_ranks_first(setup):
    data, export_dir, task, model = setup
    ids, scores, captions = in_process_ranking(task, model, data[1], QUERY)
    proc = run_bin("search", f"--export_dir={export_dir}", f"--data={data[1]}", "--query", QUERY, "--top_k=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"query {QUERY!r}: top 3 of {len(ids)} videos"
    ranked = [re.fullmatch(r"\s*(\d+)  (\S+)  score (-?[0-9.]+)", line) for line in lines[1:]]
    ranked = [m.groups() for m in ranked if m]
    assert [r[0] for r in ranked] == ["1", "2", "3"]
    assert [r[1] for r in ranked] == ids[:3]
    np.testing.assert_allclose([float(r[2]) for r in ranked], scores[:3], atol=1e-4)
    # Each video's captions follow its line.
    printed = "\n".join(lines)
    for caption in captions[0]:
        assert f"\n       {caption}" in printed


def test_search_reads_quantized_records(setup, tmp_path):
    _, export_dir, task, model = setup
    make_video_text_data(str(tmp_path), num_videos=12, num_steps=40, clip_dim=8, min_clips=2, max_clips=6,
                         num_shards=1, splits=(1.0, 0.0, 0.0), clip_encoding="quantized")
    pattern = str(tmp_path / "train-*.tfrecord")
    results, count = search(export_dir, pattern, QUERY, top_k=4, batch_size=5)
    assert count == 12 and len(results) == 4
    task.config.data.clip_encoding = "quantized"
    try:
        ids, scores, _ = in_process_ranking(task, model, pattern, QUERY)
    finally:
        task.config.data.clip_encoding = "float"
    assert [r[0] for r in results] == ids[:4]
    np.testing.assert_allclose([r[1] for r in results], scores[:4], atol=1e-5)


def test_search_errors_name_the_flag(setup, tmp_path):
    data, export_dir, _, _ = setup
    with pytest.raises(DataError, match=r"--data=.*nothing-\*.*matches no file"):
        search(export_dir, str(tmp_path / "nothing-*"), QUERY)
    with pytest.raises(ConfigError, match="--query is empty"):
        search(export_dir, data[1], "  ")
    with pytest.raises(ConfigError, match="--top_k=0"):
        search(export_dir, data[1], QUERY, top_k=0)
    other = tmp_path / "not_retrieval"
    archive_module = tf.Module()
    archive_module.f = tf.function(lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(archive_module, str(other), signatures={"serving_default": archive_module.f})
    with pytest.raises(DataError, match=r"expected a retrieval export.*missing \['embed_text'"):
        search(str(other), data[1], QUERY)
    proc = run_bin("search", f"--export_dir={tmp_path / 'missing'}", f"--data={data[1]}", "--query=eggs")
    assert_one_line_error(proc, "--export_dir=", "not a SavedModel")


@pytest.mark.slow
def test_train_evaluate_export_search_binaries(tmp_path):
    data = write_tiny_data(str(tmp_path / "data"), num_videos=40)
    config_file = tmp_path / "cfg.py"
    config_file.write_text("\n".join([
        "import sys", f"sys.path.insert(0, {REPO_ROOT!r})",
        "from tests.tasks.test_retrieval import tiny_config",
        "def get_config():", f"    return tiny_config({data!r})"]) + "\n")
    env = {"VT_KERAS_CACHE": str(tmp_path / "cache")}
    workdir = str(tmp_path / "w")
    trained = run_bin("train", f"--config={config_file}", f"--workdir={workdir}", "--config.train.num_steps=4",
                      "--strategy=one", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "text→video" in trained.stdout and "vocabulary:" in trained.stdout
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["step"] == 4 and metrics["num_videos"] == 12
    for key in ("R@1", "R@5", "R@10", "MedR", "MnR"):
        assert f"t2v/{key}" in metrics and f"v2t/{key}" in metrics

    evaluated = run_bin("evaluate", f"--workdir={workdir}", f"--data={data[0]}", f"--output={tmp_path / 'e.json'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(tmp_path / "e.json") as f:
        assert json.load(f)["num_videos"] == 28
    assert_one_line_error(run_bin("evaluate", f"--workdir={workdir}", f"--data={tmp_path / 'none-*'}"),
                          "none-*", "expected at least one TFRecord file")

    export_dir = str(tmp_path / "export" / "1")
    exported = run_bin("export", f"--workdir={workdir}", f"--export_dir={export_dir}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    found = run_bin("search", f"--export_dir={export_dir}", f"--data={data[1]}", "--query=whisk the eggs")
    assert found.returncode == 0, found.stderr[-3000:]
    assert "top 5 of 12 videos" in found.stdout
