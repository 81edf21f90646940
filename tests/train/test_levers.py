"""The trainer's speed levers change how a step runs, not what it computes.

`train.steps_per_loop` (several steps per host round trip), `train.precision`
(mixed bfloat16 / float16 with dynamic loss scaling) and `train.jit_compile`
(XLA). Comparisons use plain SGD on the `test_ordered` task (the same
batches in every run), as in `test_loop.py`.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tests.train.ordered_task  # noqa: F401  (registers the test tasks)
from tests.train.ordered_task import OrderedYT8M
from tests.train.test_loop import SGD, _scalars, assert_same_variables, quiet, variables
from tests.yt8m_fixtures import tiny_config, write_tiny_yt8m
from vt_keras.errors import ConfigError, TrainingDiverged
from vt_keras import tasks
from vt_keras.train.step import dtype_policy

DEVICE = "/cpu:0"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")))


def run(config, workdir):
    return tasks.train(config, str(workdir), strategy=tf.distribute.OneDeviceStrategy(DEVICE), log=quiet)


def test_steps_per_loop_gives_the_weights_of_single_steps(tiny_data, tmp_path):
    base = {**SGD, "task": "test_ordered", "train.num_steps": 10, "train.checkpoint_every": 0,
            "train.log_every": 10}
    _, single = run(tiny_config(tiny_data, **base, **{"train.steps_per_loop": 1}), tmp_path / "one")
    lines = []
    config = tiny_config(tiny_data, **base, **{"train.steps_per_loop": 4})
    _, looped = tasks.train(config, str(tmp_path / "four"), strategy=tf.distribute.OneDeviceStrategy(DEVICE),
                           log=lines.append)
    # The same operations on the same batches in the same order: float rounding only (see test_loop.py).
    assert_same_variables(variables(single), variables(looped))
    assert sum("step 10/10" in line for line in lines) == 1


def test_nan_inside_a_loop_stops_at_its_end_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    # NaN from the 4th step on; loops of 5 steps end at 5 and 10; the checkpoint of step 5 must not be written.
    config = tiny_config(tiny_data, **{"task": "test_nan_at_step_3", "train.num_steps": 10, "train.log_every": 5,
                                       "train.checkpoint_every": 5, "train.steps_per_loop": 5})
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5; .*\(none yet\)"):
        run(config, tmp_path / "w")
    assert tf.train.latest_checkpoint(str(tmp_path / "w" / "checkpoints")) is None


def _fixed_batch_loss(config, precision, initial):
    """The task's loss on the first training batch, model built under `precision` with the given weights."""
    task = tasks.build_task(config)
    with dtype_policy(precision):
        model = task.build_model()
    for v in model.variables:
        v.assign(initial[v.path])
    batch = next(iter(task.train_dataset(tf.distribute.InputContext())))
    from vt_keras.train.task import StepContext

    ctx = StepContext(global_batch_size=int(config.train.batch_size), num_replicas=1, gather=lambda x, axis=0: x,
                      step=tf.constant(0, tf.int64))
    loss, _ = task.loss_fn(model, batch, ctx)
    return float(loss), model


@pytest.mark.parametrize("precision,rtol", [
    # One rounding of every input and weight to bfloat16 (8 significant bits, relative error 2^-9) and
    # of each layer's output: over the ~6 layers of the late-fusion model the loss (a sum of per-class
    # cross-entropies, computed in float32) moves by about 6 * 2^-9 = 1.2% at most; rtol 3%.
    ("mixed_bfloat16", 3e-2),
    # float16 keeps 11 significant bits (2^-12 relative): the same count gives 0.15%; rtol 0.5%.
    ("mixed_float16", 5e-3),
])
def test_mixed_precision_matches_float32_on_a_fixed_batch_and_trains(tiny_data, tmp_path, precision, rtol):
    config = tiny_config(tiny_data, **{**SGD, "task": "test_ordered", "train.num_steps": 3,
                                       "train.checkpoint_every": 0, "train.precision": precision})
    results, model = run(config, tmp_path / "w")
    assert np.isfinite(results["gap"])
    initial = OrderedYT8M.initial_variables
    reference, _ = _fixed_batch_loss(config, "float32", initial)
    mixed, mixed_model = _fixed_batch_loss(config, precision, initial)
    assert np.isfinite(mixed)
    np.testing.assert_allclose(mixed, reference, rtol=rtol)
    # Variables stay float32; the layers compute in the half type; the output is float32.
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert model.get_layer("moe").compute_dtype == precision.split("_")[1]
    if precision == "mixed_float16":
        assert _scalars(str(tmp_path / "w"), "loss_scale")[3] == 2.0 ** 15


def test_float16_overflow_skips_the_step_and_halves_the_loss_scale(tiny_data, tmp_path):
    base = {"task": "test_overflow_at_step_0", "train.checkpoint_every": 0, "train.precision": "mixed_float16",
            "optimizer.name": "sgd", "optimizer.learning_rate": 0.05, "optimizer.momentum": 0.0}
    _, model = run(tiny_config(tiny_data, **base, **{"train.num_steps": 1}), tmp_path / "one")
    initial = OrderedYT8M.initial_variables
    # The overflowing step left every weight as it was ...
    for v in model.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), initial[v.path], err_msg=v.path)
    assert _scalars(str(tmp_path / "one"), "loss_scale")[1] == 2.0 ** 14
    # ... and the next (finite) step trains at the lowered scale.
    _, model = run(tiny_config(tiny_data, **base, **{"train.num_steps": 2}), tmp_path / "two")
    moved = [v.path for v in model.trainable_variables if not np.array_equal(v.numpy(), initial[v.path])]
    assert moved
    assert _scalars(str(tmp_path / "two"), "loss_scale")[2] == 2.0 ** 14


def test_xla_matches_the_plain_step(tiny_data, tmp_path):
    base = {**SGD, "task": "test_ordered", "train.num_steps": 4, "train.checkpoint_every": 0}
    _, plain = run(tiny_config(tiny_data, **base), tmp_path / "plain")
    _, xla = run(tiny_config(tiny_data, **base, **{"train.jit_compile": True}), tmp_path / "xla")
    # XLA fuses and reorders float operations: rounding-level differences only (see test_loop.py).
    assert_same_variables(variables(plain), variables(xla))


def test_xla_names_the_op_it_cannot_compile(tiny_data, tmp_path):
    config = tiny_config(tiny_data, **{"task": "test_not_xla_compilable", "train.num_steps": 1,
                                       "train.jit_compile": True})
    with pytest.raises(ConfigError, match=r"train.jit_compile=true: XLA cannot compile the .*EagerPyFunc.*"
                                          r"set --config.train.jit_compile=false"):
        run(config, tmp_path / "w")


def test_export_of_a_mixed_precision_model_serves_float32(tiny_data, tmp_path):
    config = tiny_config(tiny_data, **{"train.num_steps": 1, "train.checkpoint_every": 0,
                                       "train.precision": "mixed_bfloat16"})
    task = tasks.build_task(config)
    _, model = tasks.train(config, str(tmp_path / "w"), strategy=tf.distribute.OneDeviceStrategy(DEVICE), log=quiet,
                          task=task)
    task.export(model, str(tmp_path / "export"))
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["predict_features"]
    rgb = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
    audio = np.random.default_rng(1).normal(size=(2, 6, 4)).astype("float32")
    out = serve(rgb=rgb, audio=audio, num_frames=np.array([6, 3], "int32"))
    assert out["predictions"].dtype == tf.float32 and out["scores"].dtype == tf.float32
    assert keras.config.dtype_policy().name == "float32"  # training did not leave its policy behind
