"""Two worker processes under MultiWorkerMirroredStrategy: same weights as one device, a lost worker."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.train.test_loop import SGD, assert_same_variables, quiet, variables
from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from vt_keras import tasks


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")))


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(tiny_data, workdir, outputs, overrides):
    ports = _free_ports(2)
    script = os.path.join(REPO_ROOT, "tests", "train", "multiworker_worker.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return [subprocess.Popen([sys.executable, script, str(i), str(ports[0]), str(ports[1]), tiny_data, str(workdir),
                              str(outputs[i]), json.dumps(overrides)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
            for i in range(2)]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_workers_match_one_device_on_the_same_global_batches(tiny_data, tmp_path):
    overrides = {**SGD, "task": "test_ordered", "train.num_steps": 3, "train.checkpoint_every": 2}
    outputs = [tmp_path / "w0.npz", tmp_path / "w1.npz"]
    procs = _start_workers(tiny_data, tmp_path / "w", outputs, overrides)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, logs):
        assert p.returncode == 0, out[-3000:]
        assert "done at step 3" in out
    assert tf.train.latest_checkpoint(str(tmp_path / "w" / "checkpoints")).endswith("ckpt-3")
    _, one = tasks.train(tiny_config(tiny_data, **overrides), str(tmp_path / "one"),
                        strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), log=quiet)
    expected = variables(one)
    for out in outputs:
        saved = np.load(out)
        assert_same_variables([saved[k] for k in saved.files], expected)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_lost_worker_stops_the_other_and_the_rerun_resumes(tiny_data, tmp_path):
    overrides = {"train.num_steps": 100_000, "train.checkpoint_every": 20, "train.log_every": 1000}
    workdir = tmp_path / "w"
    outputs = [tmp_path / "w0.npz", tmp_path / "w1.npz"]
    procs = _start_workers(tiny_data, workdir, outputs, overrides)
    deadline = time.time() + 240
    while time.time() < deadline and not tf.train.latest_checkpoint(str(workdir / "checkpoints")):
        assert procs[0].poll() is None and procs[1].poll() is None, procs[0].communicate()[0][-3000:]
        time.sleep(0.1)
    procs[1].kill()
    t0 = time.time()
    # Bounded: the cluster's heartbeats notice the lost worker within seconds; 120 s is a generous cap.
    out = procs[0].communicate(timeout=120)[0]
    procs[1].communicate()
    assert procs[0].returncode == 2, out[-3000:]
    assert time.time() - t0 < 120
    assert "error: a worker of the cluster stopped responding" in out
    assert "restart every worker with the same command" in out
    last = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    last_step = int(last.rsplit("-", 1)[1])

    overrides["train.num_steps"] = last_step + 3
    procs = _start_workers(tiny_data, workdir, outputs, overrides)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
        assert f"at step {last_step}" in log and "resumed from" in log
        assert f"done at step {last_step + 3}" in log
