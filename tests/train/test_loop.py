"""The training loop: replicas, workers, clipping, resume, preemption, NaN/Inf guard, checkpoint mismatch.

Equalities between setups (two replicas or two workers vs one device, a
resumed run vs an uninterrupted one) are made with plain SGD, whose update
is linear in the gradient: float rounding in the gradient (summation order
across replicas) moves a weight by about `lr · |g| · 1e-6` per step and
stays that small. Adam divides by the root of the second moment, so a
gradient that is analytically zero but holds rounding noise of 1e-12 would
move its weight by a full `lr` on one setup and not on the other.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tests.train.ordered_task  # noqa: F401  (registers the test tasks)
from tests.conftest import mirrored_strategy
from tests.train.ordered_task import OrderedYT8M
from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from vt_keras.errors import CheckpointError, TrainingDiverged
from vt_keras import tasks

# SGD with momentum: linear in the gradients (see the module docstring).
SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.05, "optimizer.momentum": 0.9}

# Two setups that sum the same per-example gradients in a different order
# differ per gradient entry by a few float32 ulps of the largest partial sum
# (|g| <~ 10 here, so <~ 1e-5); over S <= 5 SGD steps with lr 0.05 and
# momentum 0.9 (an amplification of at most 1/(1 - 0.9) = 10) a weight moves
# by at most S * 10 * lr * 1e-5 = 2.5e-5, and the network's response to
# weights that differ by that much stays at that order. atol 1e-4 leaves
# a margin of four; any wrong update (a lost replica's gradient, a wrong
# scaling, another batch) moves weights by >= lr * |g| ~ 1e-2.
ATOL = 1e-4
RTOL = 1e-5


def quiet(*args):
    del args


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")))


def variables(model):
    return [np.asarray(v.numpy()) for v in model.variables]


def assert_same_variables(a, b, atol=ATOL, rtol=RTOL):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def assert_moved(model, initial):
    """Training changed every trainable weight of `model` from its value as built."""
    still = [v.path for v in model.trainable_variables
             if np.allclose(np.asarray(v.numpy()), initial[v.path], rtol=0, atol=1e-6)]
    assert not still, f"training left {still} at their initial values"


def _value(model, path):
    return next(np.asarray(v.numpy()) for v in model.variables if v.path == path)


def test_mirrored_two_replicas_match_one_device(tiny_data, tmp_path, logical_cpus):
    config = tiny_config(tiny_data, **SGD, **{"task": "test_ordered", "train.num_steps": 4,
                                              "train.checkpoint_every": 0})
    _, one = tasks.train(config, str(tmp_path / "one"), strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]),
                        log=quiet)
    initial = OrderedYT8M.initial_variables
    _, two = tasks.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    assert_same_variables(variables(one), variables(two))
    # The comparison means something only if training moved the weights from where they started.
    assert_moved(one, initial)


def _scalars(workdir, tag):
    """{step: value} of a scalar the trainer wrote to TensorBoard under `workdir/train`."""
    values = {}
    for path in tf.io.gfile.glob(os.path.join(workdir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag == tag:
                    values[event.step] = float(tf.make_ndarray(v.tensor))
    return values


def test_gradient_clipping_scales_the_update_to_the_clip_norm(tiny_data, tmp_path, logical_cpus):
    # One plain SGD step (no momentum): the update is -lr * clip(g), so the
    # clipped update is the unclipped one times clip_norm / |g|, and |g| is
    # |unclipped update| / lr, computed here without the clipping code.
    lr = 0.05
    base = {"task": "test_ordered", "train.num_steps": 1, "train.checkpoint_every": 0,
            "optimizer.name": "sgd", "optimizer.learning_rate": lr, "optimizer.momentum": 0.0}
    device = tf.distribute.OneDeviceStrategy(logical_cpus[0])
    _, plain = tasks.train(tiny_config(tiny_data, **base), str(tmp_path / "plain"), strategy=device, log=quiet)
    initial = OrderedYT8M.initial_variables
    paths = [v.path for v in plain.trainable_variables]
    plain_update = [_value(plain, p).astype(np.float64) - initial[p] for p in paths]
    grad_norm = np.sqrt(sum(np.sum(u ** 2) for u in plain_update)) / lr

    clip = grad_norm / 4  # active: the clipped step is a quarter of the plain one
    clipped_cfg = tiny_config(tiny_data, **base, **{"train.grad_clip_norm": float(clip)})
    _, clipped = tasks.train(clipped_cfg, str(tmp_path / "clipped"), strategy=device, log=quiet)
    _, two = tasks.train(clipped_cfg, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    clipped_update = [_value(clipped, p).astype(np.float64) - initial[p] for p in paths]

    # An update read back as `w1 - w0` in float32 is off by up to half an ulp
    # of w1: with |w| < 2 that is 1.2e-7, so two updates compare to 2.4e-7
    # (atol 3e-7); the norm over thousands of entries is far more precise.
    assert max(np.max(np.abs(initial[p])) for p in paths) < 2
    atol = 3e-7
    # The reported norm is the unclipped global norm of the whole step's gradient.
    reported = _scalars(str(tmp_path / "clipped"), "grad_norm")[1]
    np.testing.assert_allclose(reported, grad_norm, rtol=1e-4)
    for p, u, c in zip(paths, plain_update, clipped_update):
        np.testing.assert_allclose(c, u / 4, rtol=1e-4, atol=atol, err_msg=p)
    total = np.sqrt(sum(np.sum(c ** 2) for c in clipped_update))
    np.testing.assert_allclose(total, lr * clip, rtol=1e-4)
    # Two replicas clip the *summed* gradient, as one device does (a replica
    # clipping its own half would give another step).
    assert_same_variables(variables(clipped), variables(two), atol=atol, rtol=1e-4)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_nan_or_inf_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, bad):
    config = tiny_config(tiny_data, **{"task": f"test_{bad}_at_step_3", "train.num_steps": 10,
                                       "train.checkpoint_every": 2})
    workdir = str(tmp_path / "w")
    with pytest.raises(TrainingDiverged, match=rf"loss became {bad} at step 4.*ckpt-2"):
        tasks.train(config, workdir, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), log=quiet)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-2")


def test_resume_continues_the_interrupted_data_stream(tiny_data, tmp_path):
    # The real task's shuffled stream: a resumed run must train on the batches
    # the interrupted run had not reached yet, not on a new shuffle.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    workdir = str(tmp_path / "w")
    tasks.train(tiny_config(tiny_data, **SGD, **{"train.num_steps": 2}), workdir, strategy=strategy, log=quiet)
    lines = []
    config = tiny_config(tiny_data, **SGD, **{"train.num_steps": 5})
    results, resumed = tasks.train(config, workdir, strategy=strategy, log=lines.append)
    assert results["step"] == 5
    assert any("resumed from" in line and "step 2" in line for line in lines)
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["step"] == 5
    _, straight = tasks.train(config, str(tmp_path / "straight"), strategy=strategy, log=quiet)
    assert_same_variables(variables(resumed), variables(straight))


def test_workdir_of_a_different_model_is_refused(tiny_data, tmp_path):
    workdir = str(tmp_path / "w")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    tasks.train(tiny_config(tiny_data, **{"train.num_steps": 1}), workdir, strategy=strategy, log=quiet)
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    other = tiny_config(tiny_data, **{"train.num_steps": 2, "model.hidden_size": 32})
    with pytest.raises(CheckpointError, match=r"different model.*model.hidden_size: checkpoint 16 vs now 32"):
        tasks.train(other, workdir, strategy=strategy, log=quiet)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_two_replicas_with_the_cka_term_match_one_device(tiny_data, tmp_path, logical_cpus):
    # CKAAlignment's -λ·CKA is computed on the gathered global batch by every replica and added
    # once over them (global_scalar): the same update as one device.
    config = tiny_config(tiny_data, **SGD, **{"task": "test_ordered", "train.num_steps": 3, "train.checkpoint_every": 0,
                                              "model.branch_units": 6, "model.cka.weight": 0.5})
    _, one = tasks.train(config, str(tmp_path / "one"), strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]),
                         log=quiet)
    initial = OrderedYT8M.initial_variables
    _, two = tasks.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    assert_same_variables(variables(one), variables(two))
    assert_moved(one, initial)
