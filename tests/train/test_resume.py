"""Exact resume: `kill -9` or SIGTERM, then the same command again, ends with the uninterrupted weights."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.train.test_loop import SGD, assert_same_variables, variables
from tests.yt8m_fixtures import write_tiny_yt8m
from vt_keras import tasks
from vt_keras.train import checkpoints


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")))


def _write_config(path, tiny_data, overrides):
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO_ROOT!r})\n"
        "from tests.yt8m_fixtures import tiny_config\n"
        "def get_config():\n"
        f"    return tiny_config({tiny_data!r}, **{overrides!r})\n")
    return str(path)


# Long enough that the process is still training when the test signals it.
RESUME_STEPS = 300
RESUME_OVERRIDES = {**SGD, "train.num_steps": RESUME_STEPS, "train.checkpoint_every": 10,
                    "train.log_every": 1000, "train.deterministic": True}


def _train_cmd(config_file, workdir):
    return [sys.executable, os.path.join(REPO_ROOT, "bin", "train"), f"--config={config_file}",
            f"--workdir={workdir}", "--strategy=one", "--noexport"]


def _final_variables(workdir):
    _, model = tasks.restore_model(checkpoints.load_config(str(workdir)), str(workdir))
    return variables(model)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    """The final variables of one uninterrupted deterministic run (the reference of the resume tests)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    config_file = _write_config(root / "config.py", tiny_data, RESUME_OVERRIDES)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(_train_cmd(config_file, root / "w"), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return config_file, _final_variables(root / "w")


def _wait_for_checkpoint(proc, workdir, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and not tf.train.latest_checkpoint(str(workdir / "checkpoints")):
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.02)


# Under `train.deterministic` the resumed run computes the same operations on
# the same inputs in the same order as the uninterrupted one (restored
# variables and optimizer state are exact, the data stream continues where
# it stopped), so the weights agree bit for bit; RTOL/ATOL are kept only as
# the suite's bound for float rounding and a wrong resume (a replayed or
# reshuffled batch) is ~1e-2 away.


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_rerun_ends_with_the_uninterrupted_weights(uninterrupted, tmp_path):
    config_file, expected = uninterrupted
    workdir = tmp_path / "w"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(_train_cmd(config_file, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    _wait_for_checkpoint(proc, workdir)
    time.sleep(random.uniform(0.0, 0.5))  # somewhere after a checkpoint, not on it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    done = subprocess.run(_train_cmd(config_file, workdir), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout
    with open(workdir / "metrics.json") as f:
        assert json.load(f)["step"] == RESUME_STEPS
    assert_same_variables(_final_variables(workdir), expected)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_loses_no_step(uninterrupted, tmp_path):
    config_file, expected = uninterrupted
    workdir = tmp_path / "w"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(_train_cmd(config_file, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    _wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "SIGTERM at step" in lines[0] and "rerun the same command" in lines[0], err[-3000:]
    stopped = int(lines[0].split("SIGTERM at step ")[1].split("/")[0])
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(f"ckpt-{stopped}")
    done = subprocess.run(_train_cmd(config_file, workdir), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"at step {stopped}" in done.stdout
    assert_same_variables(_final_variables(workdir), expected)
