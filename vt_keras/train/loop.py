"""The one training loop, read top to bottom like a recipe.

strategy → task → model and optimizer inside `strategy.scope()` → restore the
latest checkpoint → datasets through `distribute_datasets_from_function` →
step function under `tf.function` (each replica computes its loss
contribution, see `vt_keras.train.task`) → progress line, TensorBoard
scalars, checkpoints, periodic evaluation → final evaluation into
`metrics.json`.

The same code runs on one device, under `MirroredStrategy` and under
`MultiWorkerMirroredStrategy` (Keras' `model.fit` cannot run the latter with
two or more workers, so the loop is ours).
"""
import json
import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from vt_keras import distributed
from vt_keras.errors import TrainingDiverged
from vt_keras.train import checkpoints, strategy as strategy_lib
from vt_keras.train.schedules import LearningRate, ReduceOnPlateau, build_optimizer
from vt_keras.train.task import TASKS, StepContext

METRICS_FILE = "metrics.json"


def build_task(config):
    import vt_keras.tasks  # noqa: F401  (registers the tasks)

    return TASKS.get(config.task, key="task")(config)


def _make_replica_step(task, model, optimizer, global_batch_size, num_replicas, clip_norm, warmup_steps=0):
    variables = model.trainable_variables

    def replica_step(batch):
        main_weight = 1.0
        if warmup_steps:
            main_weight = tf.cast(optimizer.iterations >= warmup_steps, tf.float32)
        ctx = StepContext(global_batch_size=global_batch_size, num_replicas=num_replicas,
                          gather=distributed.replica_gather, step=optimizer.iterations,
                          main_weight=main_weight)
        with tf.GradientTape() as tape:
            loss, metrics = task.loss_fn(model, batch, ctx)
            extra = [tf.cast(x, tf.float32) for x in model.losses]
            if extra:
                # add_loss terms (e.g. CKAAlignment) are global scalars.
                loss = loss + tf.add_n(extra) / float(num_replicas)
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads = [g for g, _ in pairs]
        grad_norm = tf.constant(0.0)
        if clip_norm:
            # Clip the *summed* gradient: sum over replicas first, then hand each
            # replica 1/N of it, since the optimizer sums over replicas again.
            rctx = tf.distribute.get_replica_context()
            if num_replicas > 1:
                grads = rctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads, grad_norm = tf.clip_by_global_norm(grads, clip_norm)
            grads = [g / float(num_replicas) for g in grads]
        optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
        metrics = dict(metrics)
        metrics["grad_norm"] = grad_norm
        return loss, metrics

    return replica_step


def _write_scalars(writer, step, scalars):
    if writer is None:
        return
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()


def evaluate_and_log(task, model, pattern, writer, step, log=print, prefix="eval"):
    """Runs the task's evaluation and writes its scalars under `prefix/`."""
    t0 = time.time()
    results = task.evaluate(model, pattern)
    _write_scalars(writer, step, {f"{prefix}/{k}": v for k, v in results.items() if isinstance(v, (int, float))})
    log(f"[{prefix}] step {step}: {task.summary_line(results)} ({time.time() - t0:.1f}s)")
    return results


def train(config, workdir, strategy=None, log=print):
    """Trains `config` into `workdir`; returns the final evaluation metrics.

    Resumes from the latest checkpoint in `workdir` if there is one and stops
    at `config.train.num_steps` in total.
    """
    strategy = strategy or strategy_lib.create_strategy("auto")
    chief = strategy_lib.is_chief(strategy)
    num_replicas = strategy.num_replicas_in_sync
    tcfg = config.train
    global_batch = int(tcfg.batch_size)
    if global_batch % num_replicas:
        from vt_keras.errors import ConfigError

        raise ConfigError(f"train.batch_size={global_batch} must be divisible by the {num_replicas} replicas")

    keras.utils.set_random_seed(int(config.seed))
    task = build_task(config)
    checkpoints.check_same_model(config, workdir)
    if chief:
        checkpoints.save_config(config, workdir)

    schedule = LearningRate.from_config(config.optimizer, tcfg.num_steps)
    plateau = ReduceOnPlateau(
        monitor=config.optimizer.get("plateau_monitor", None),
        mode=config.optimizer.get("plateau_mode", "max"),
        patience=config.optimizer.get("plateau_patience", 0),
        factor=config.optimizer.get("plateau_factor", 0.1),
    )
    with strategy.scope():
        model = task.build_model()
        optimizer = build_optimizer(config.optimizer)
        optimizer.build(model.trainable_variables)
        task.warm_start(model)
    keeper = checkpoints.CheckpointKeeper(
        workdir, chief=chief, max_to_keep=tcfg.get("keep_checkpoints", 3),
        model=model, optimizer=optimizer, **plateau.trackables(), **task.trackables())
    restored = keeper.restore()
    start_step = int(optimizer.iterations.numpy())
    if restored:
        log(f"resumed from {restored} at step {start_step}")
    # A resumed run reshuffles with a new seed instead of replaying the same examples.
    task.data_seed = int(config.seed) + start_step
    dist_ds = strategy.distribute_datasets_from_function(task.train_dataset)
    iterator = iter(dist_ds)

    replica_step = _make_replica_step(task, model, optimizer, global_batch, num_replicas,
                                      tcfg.get("grad_clip_norm", 0.0), int(tcfg.get("cka_warmup_steps", 0)))

    @tf.function
    def train_step(it):
        optimizer.learning_rate.assign(schedule(optimizer.iterations) * plateau.scale)
        loss, metrics = strategy.run(replica_step, args=(next(it),))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        metrics = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in metrics.items()}
        return loss, metrics

    writer = tf.summary.create_file_writer(os.path.join(workdir, "train")) if chief else None
    eval_writer = tf.summary.create_file_writer(os.path.join(workdir, "eval")) if chief else None
    num_steps = int(tcfg.num_steps)
    log_every = max(int(tcfg.get("log_every", 50)), 1)
    ckpt_every = int(tcfg.checkpoint_every)
    eval_every = int(tcfg.get("eval_every", 0))
    last_saved = start_step if restored else -1
    step = start_step
    t_last, steps_since = time.time(), 0
    log(f"training {config.task} to step {num_steps} on {num_replicas} replica(s), "
        f"global batch {global_batch}, workdir {workdir}")
    while step < num_steps:
        # A bad record becomes one DataError line (the task knows its records' hints).
        with task.error_context():
            loss, metrics = train_step(iterator)
        step += 1
        steps_since += 1
        loss_value = float(loss)
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"loss became {loss_value} at step {step}; training stopped and the last good checkpoint "
                f"({keeper.latest or 'none yet'}) is kept; lower optimizer.learning_rate or set train.grad_clip_norm")
        if step % log_every == 0 or step == num_steps:
            elapsed = time.time() - t_last
            ex_per_sec = steps_since * global_batch / max(elapsed, 1e-9)
            lr = float(optimizer.learning_rate.numpy())
            scalars = {"loss": loss_value, "learning_rate": lr, "examples_per_sec": ex_per_sec}
            scalars.update({k: float(v) for k, v in metrics.items()})
            _write_scalars(writer, step, scalars)
            extra = " ".join(f"{k}={float(v):.4g}" for k, v in metrics.items() if k != "grad_norm")
            log(f"step {step}/{num_steps} loss={loss_value:.4f} lr={lr:.3g} {extra} "
                f"examples/sec={ex_per_sec:.1f}".replace("  ", " "))
            t_last, steps_since = time.time(), 0
        if ckpt_every and step % ckpt_every == 0:
            keeper.save(step)
            last_saved = step
        if eval_every and step % eval_every == 0 and step < num_steps:
            results = evaluate_and_log(task, model, config.data.eval_pattern, eval_writer, step, log)
            if plateau.update(results):
                log(f"no improvement of {plateau.monitor} for {plateau.patience} evaluations: "
                    f"learning rate scale now {float(plateau.scale.numpy()):.3g}")
    if last_saved != step:
        keeper.save(step)
    results = evaluate_and_log(task, model, config.data.eval_pattern, eval_writer, step, log)
    results["step"] = step
    if chief:
        with tf.io.gfile.GFile(os.path.join(workdir, METRICS_FILE), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    logging.info("final metrics: %s", results)
    return results, model


def restore_model(config, workdir):
    """Builds the task's model and loads the latest checkpoint of `workdir` into it."""
    task = build_task(config)
    model = task.build_model()
    keeper = checkpoints.CheckpointKeeper(workdir, chief=True, model=model)
    path = keeper.latest
    if path is None:
        from vt_keras.errors import CheckpointError

        raise CheckpointError(f"--workdir={workdir} has no checkpoint in {checkpoints.CHECKPOINT_DIR}/; "
                              "expected the workdir of a `train` run")
    status = keeper.checkpoint.restore(path)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        from vt_keras.errors import CheckpointError

        raise CheckpointError(f"checkpoint {path} does not fit the model of {workdir}/config.json ({e})") from e
    status.expect_partial()
    return task, model
