"""The training loop: replicas, workers, resume, NaN guard, checkpoint mismatch."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, mirrored_strategy
from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from vt_keras.errors import CheckpointError, TrainingDiverged
from vt_keras.tasks.yt8m import YT8MClassification
from vt_keras.train import loop
from vt_keras.train.task import TASKS


def quiet(*args):
    del args


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")))


def weights(model):
    return [np.asarray(v.numpy()) for v in model.weights]


def test_mirrored_two_replicas_match_one_device(tiny_data, tmp_path, logical_cpus):
    config = tiny_config(tiny_data, **{"train.num_steps": 2, "train.checkpoint_every": 0})
    _, one = loop.train(config, str(tmp_path / "one"), strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]),
                        log=quiet)
    _, two = loop.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus),
                        log=quiet)
    w1, w2 = weights(one), weights(two)
    assert len(w1) == len(w2)
    changed = 0
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The comparison means something only if training moved the weights.
    fresh = loop.build_task(config).build_model()
    changed = sum(not np.allclose(a, b) for a, b in zip(weights(fresh), w1))
    assert changed > 0


def test_gradient_clipping_clips_the_global_gradient(tiny_data, tmp_path, logical_cpus):
    config = tiny_config(tiny_data, **{"train.num_steps": 2, "train.checkpoint_every": 0,
                                       "train.grad_clip_norm": 1e-3})
    _, one = loop.train(config, str(tmp_path / "one"), strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]),
                        log=quiet)
    _, two = loop.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus),
                        log=quiet)
    for a, b in zip(weights(one), weights(two)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@TASKS.register("test_nan_at_step_3")
class _NanAtStep3(YT8MClassification):
    def loss_fn(self, model, batch, ctx):
        loss, metrics = super().loss_fn(model, batch, ctx)
        return tf.where(ctx.step >= 3, tf.constant(np.nan, loss.dtype), loss), metrics


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
    config = tiny_config(tiny_data, **{"task": "test_nan_at_step_3", "train.num_steps": 10,
                                       "train.checkpoint_every": 2})
    workdir = str(tmp_path / "w")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4.*ckpt-2"):
        loop.train(config, workdir, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), log=quiet)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-2")


def test_resume_continues_to_the_same_total_steps(tiny_data, tmp_path):
    workdir = str(tmp_path / "w")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    config = tiny_config(tiny_data, **{"train.num_steps": 2})
    loop.train(config, workdir, strategy=strategy, log=quiet)
    lines = []
    config = tiny_config(tiny_data, **{"train.num_steps": 5})
    results, _ = loop.train(config, workdir, strategy=strategy, log=lines.append)
    assert results["step"] == 5
    assert any("resumed from" in line and "step 2" in line for line in lines)
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["step"] == 5


def test_workdir_of_a_different_model_is_refused(tiny_data, tmp_path):
    workdir = str(tmp_path / "w")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    loop.train(tiny_config(tiny_data, **{"train.num_steps": 1}), workdir, strategy=strategy, log=quiet)
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    other = tiny_config(tiny_data, **{"train.num_steps": 2, "model.hidden_size": 32})
    with pytest.raises(CheckpointError, match=r"different model.*model.hidden_size: checkpoint 16 vs now 32"):
        loop.train(other, workdir, strategy=strategy, log=quiet)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tiny_data, tmp_path):
    ports = _free_ports(2)
    script = os.path.join(REPO_ROOT, "tests", "train", "multiworker_worker.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    procs = [subprocess.Popen([sys.executable, script, str(i), str(ports[0]), str(ports[1]), tiny_data,
                               str(tmp_path / "w"), str(tmp_path / f"w{i}.npz")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "done at step 3" in out
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    assert tf.train.latest_checkpoint(str(tmp_path / "w" / "checkpoints")).endswith("ckpt-3")


@pytest.mark.slow
def test_kill_9_then_rerun_resumes(tiny_data, tmp_path):
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO_ROOT!r})\n"
        "from tests.yt8m_fixtures import tiny_config\n"
        "def get_config():\n"
        f"    return tiny_config({tiny_data!r}, **{{'train.num_steps': 400, 'train.checkpoint_every': 10,"
        " 'train.log_every': 50})\n")
    workdir = tmp_path / "w"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "bin", "train"), f"--config={config_file}",
           f"--workdir={workdir}", "--strategy=one", "--noexport"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 180
    while time.time() < deadline and not tf.train.latest_checkpoint(str(workdir / "checkpoints")):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout
    with open(workdir / "metrics.json") as f:
        assert json.load(f)["step"] == 400
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-400")
