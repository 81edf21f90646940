"""bin/compare over seeds: groups, mean ± sd, the within-the-spread mark; per-category tables from train to compare."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.cli.binaries import assert_one_line_error, run_bin
from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from vt_keras import tasks
from vt_keras.cli.compare import shared_name, summarize, within_spread
from vt_keras.data.taxonomy import Taxonomy, TaxonomyClass
from vt_keras.train.checkpoints import load_config


def test_summary_is_mean_and_sample_sd_of_the_finite_values():
    values = [8.5, 9.25, 10.0, float("nan"), None, "x"]
    mean, sd, n = summarize(values)
    assert n == 3 and mean == pytest.approx(9.25) and sd == pytest.approx(np.std([8.5, 9.25, 10.0], ddof=1))
    assert summarize([4.0]) == (4.0, None, 1)
    assert summarize([]) == (None, None, 0)
    # Within the spread: |9.25 - 10.3| = 1.05 <= max(0.75, 1.1).
    assert within_spread((9.25, 0.75, 3), (10.3, 1.1, 3)) is True
    assert within_spread((9.25, 0.75, 3), (10.3, 0.2, 3)) is False
    assert within_spread((9.25, None, 1), (10.3, 0.2, 3)) is None


def test_shared_name_keeps_what_the_runs_share():
    assert shared_name(["runs/nv_late_s0", "runs/nv_late_s1", "runs/nv_late_s12"]) == "nv_late_s*"
    assert shared_name(["a/seed0_cmc", "a/seed1_cmc"]) == "seed*_cmc"
    assert shared_name(["runs/late/"]) == "late"
    assert shared_name(["x", "y"]) == "x (+1)"


def write_run(directory, metrics, config):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    if config is not None:
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f)


def cell(values, reference=None):
    """The expected cell, derived here with numpy: mean ± sample sd, '~' when within the spread of `reference`."""
    mean, sd = np.mean(values), np.std(values, ddof=1)
    text = f"{mean:.2f} ± {sd:.2f}"
    if reference is not None:
        ref_mean, ref_sd = np.mean(reference), np.std(reference, ddof=1)
        if abs(mean - ref_mean) <= max(sd, ref_sd):
            text += " ~"
    return text


def test_group_by_seed_reports_mean_and_sd_and_marks_differences_within_the_spread(tmp_path):
    late = {"gap_error": [10.0, 10.5, 11.5], "level_0/gap_error": [5.0, 5.5, 6.5]}
    cmc = {"gap_error": [8.0, 8.25, 8.0], "level_0/gap_error": [6.0, 6.1, 6.2]}
    for name, values, fusion in (("late", late, "late"), ("cmc", cmc, "cm_concat")):
        for seed in range(3):
            write_run(tmp_path / f"{name}_s{seed}", {k: v[seed] for k, v in values.items()},
                      {"task": "yt8m", "seed": seed, "model": {"fusion": fusion}})
    (tmp_path / "late_s0.log").write_text("a log beside the workdirs is not a run")
    # Same method, other number of steps: not one of the seeds.
    write_run(tmp_path / "long", {"gap_error": 7.0}, {"task": "yt8m", "seed": 0, "model": {"fusion": "late"},
                                                       "train": {"num_steps": 9}})
    proc = run_bin("compare", f"--workdirs={tmp_path}/late_*,{tmp_path}/cmc_*,{tmp_path}/long", "--group_by=seed",
                   "--metrics=gap_error,level_*/gap_error")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    # The 2.58-point GAP gain is beyond the spread (sd 0.76 and 0.14); the level-0 difference (0.43) is within it
    # (the larger sd, 0.76), though above the smaller (0.10).
    assert lines[:5] == [
        "| runs | gap_error | level_0/gap_error |", "|---|---|---|",
        f"| late_s* (n=3) | {cell(late['gap_error'])} | {cell(late['level_0/gap_error'])} |",
        f"| cmc_s* (n=3) | {cell(cmc['gap_error'], late['gap_error'])} | "
        f"{cell(cmc['level_0/gap_error'], late['level_0/gap_error'])} |",
        "| long | 7.00 | – |"]
    assert not lines[3].split("|")[2].endswith("~ ") and lines[3].split("|")[3].endswith(" ~ ")
    assert "|mean - mean_ref| <= max(sd, sd_ref)" in proc.stdout and "'late_s*'" in proc.stdout

    # Transposed, against another reference, with more decimals.
    proc = run_bin("compare", f"--workdirs={tmp_path}/late_s*,{tmp_path}/cmc_*", "--group_by=seed",
                   "--metrics=gap_error", "--transpose", "--reference=cmc_s* (n=3)", "--digits=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    mean, sd = np.mean(late["gap_error"]), np.std(late["gap_error"], ddof=1)
    assert proc.stdout.splitlines()[:3] == [
        "| metric | late_s* (n=3) | cmc_s* (n=3) |", "|---|---|---|",
        f"| gap_error | {mean:.3f} ± {sd:.3f} | {np.mean(cmc['gap_error']):.3f} ± "
        f"{np.std(cmc['gap_error'], ddof=1):.3f} |"]


def test_runs_on_other_data_and_sweep_files_and_bad_input(tmp_path):
    config = {"task": "yt8m", "seed": 0}
    for seed, data in ((0, "test-*"), (1, "test-*"), (2, "validate-*")):
        write_run(tmp_path / f"r_s{seed}", {"gap_error": 1.0 + seed, "data": data}, dict(config, seed=seed))
    proc = run_bin("compare", f"--workdirs={tmp_path}/r_*", "--group_by=seed", "--metrics=gap_error")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[2:4] == ["| r_s* (n=2) | 1.50 ± 0.71 |", "| r_s2 | 3.00 |"]
    # A sweep's metrics.json ({value: metrics}) is one run per value, each with its own config.json.
    write_run(tmp_path / "sweep", {"0": {"gap_error": 2.0}, "1": {"gap_error": 4.0}}, None)
    for seed in (0, 1):
        write_run(tmp_path / "sweep" / str(seed), {"gap_error": 2.0 + 2 * seed}, dict(config, seed=seed))
    proc = run_bin("compare", f"--workdirs={tmp_path}/sweep", "--group_by=seed", "--metrics=gap_error")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[2] == "| sweep/* (n=2) | 3.00 ± 1.41 |"
    assert_one_line_error(run_bin("compare", f"--workdirs={tmp_path}/sweep", "--reference=nothing"),
                          "--reference='nothing' is not a group of the table", "expected one of 0, 1")
    os.remove(tmp_path / "r_s1" / "config.json")
    assert_one_line_error(run_bin("compare", f"--workdirs={tmp_path}/r_*", "--group_by=seed"),
                          f"{tmp_path / 'r_s1' / 'config.json'} does not exist", "--group_by=seed")
    assert_one_line_error(run_bin("compare", f"--workdirs={tmp_path}/r_*", "--group_by=config"),
                          "--group_by", "seed")


def write_taxonomy(directory):
    """Two top-level categories over the tiny data's 5 classes: "Sports" (0, 2, 3) and "Food" (1, 4)."""
    Taxonomy([TaxonomyClass(0, "Sports", 0), TaxonomyClass(1, "Food", 0), TaxonomyClass(2, "Ball", 1, 0),
              TaxonomyClass(3, "Ski", 1, 0), TaxonomyClass(4, "Recipe", 1, 1)]).save(
        os.path.join(directory, "taxonomy.json"))


@pytest.mark.slow
def test_per_category_results_from_train_and_evaluate_to_compare(tmp_path):
    train = write_tiny_yt8m(str(tmp_path / "data"), num_videos=32, prefix="train")
    write_taxonomy(str(tmp_path / "data"))
    for fusion_steps, name in ((2, "short"), (6, "long")):
        for seed in (0, 1):
            config = tiny_config(train, **{"data.taxonomy": "auto", "train.num_steps": fusion_steps, "seed": seed,
                                           "train.checkpoint_every": 0})
            results, _ = tasks.train(config, str(tmp_path / f"{name}_s{seed}"), log=lambda *a: None,
                                     strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
            # The evaluation at the end of training has the per-category keys of the taxonomy's roots.
            assert {"category_Sports/gap_error", "category_Food/gap_error", "category_Food/num_videos"} <= set(results)
    proc = run_bin("evaluate", f"--workdir={tmp_path / 'long_s0'}", f"--data={train}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "per top-level category (error rates, %):" in proc.stdout
    table = proc.stdout[proc.stdout.index("per top-level category"):].splitlines()
    assert table[1].split()[:2] == ["category", "videos"] and [t.split()[0] for t in table[3:5]] == ["Sports", "Food"]
    with open(tmp_path / "long_s0" / "eval_metrics.json") as f:
        evaluated = json.load(f)
    # A video counts for a category it is labelled with or whose top class lies in it: recount from the model.
    task, model = tasks.restore_model(load_config(str(tmp_path / "long_s0")), str(tmp_path / "long_s0"))
    probs, labels = (np.concatenate(parts) for parts in zip(*[(p, y) for _, p, y in task.predict(model, train)]))
    for name, classes in (("Sports", [0, 2, 3]), ("Food", [1, 4])):
        counted = labels[:, classes].any(axis=1) | np.isin(probs.argmax(axis=1), classes)
        assert evaluated[f"category_{name}/num_videos"] == counted.sum(), name
    proc = run_bin("compare", f"--workdirs={tmp_path}/*_s*", "--group_by=seed", "--metrics=category_*/gap_error")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "| runs | category_Food/gap_error | category_Sports/gap_error |"
    assert [line.split("|")[1].strip() for line in proc.stdout.splitlines()[2:4]] == ["long_s* (n=2)",
                                                                                      "short_s* (n=2)"]

