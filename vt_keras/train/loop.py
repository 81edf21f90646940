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
import re
import time

import keras
import tensorflow as tf
from absl import logging

from vt_keras import distributed
from vt_keras.errors import CheckpointError, ConfigError, TrainingDiverged, TrainingInterrupted
from vt_keras.train import checkpoints, preemption, strategy as strategy_lib
from vt_keras.train.schedules import LearningRate, ReduceOnPlateau, build_optimizer
from vt_keras.train.task import TASKS, StepContext

METRICS_FILE = "metrics.json"


def build_task(config):
    import vt_keras.tasks  # noqa: F401  (registers the tasks)

    return TASKS.get(config.task, key="task")(config)


def _make_replica_step(task, model, optimizer, global_batch_size, num_replicas, clip_norm, warmup_steps=0):
    variables = model.trainable_variables

    def replica_step(batch, stop_requested):
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
        rctx = tf.distribute.get_replica_context()
        metrics = dict(metrics)
        if clip_norm:
            # Clip the *summed* gradient: sum over replicas first, then hand each
            # replica 1/N of it, since the optimizer sums over replicas again.
            if num_replicas > 1:
                grads = rctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads, grad_norm = tf.clip_by_global_norm(grads, clip_norm)
            grads = [g / float(num_replicas) for g in grads]
            # The global norm of the whole step's gradient, before clipping.
            metrics["grad_norm"] = grad_norm
        optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
        # A SIGTERM on any worker stops all of them after the same step.
        # (identity: a copy on this replica's device; all_reduce sends results to the input's device.)
        stop = rctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(stop_requested))
        return loss, metrics, stop

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


def _checkpoint_or_none(keeper):
    return keeper.latest or "none yet"


def train(config, workdir, strategy=None, log=print, task=None):
    """Trains `config` into `workdir`; returns `(final evaluation metrics, model)`.

    Resumes from the latest checkpoint in `workdir` if there is one and stops
    at `config.train.num_steps` in total. A resumed run continues the
    interrupted run's data stream where it stopped (the stream is a function
    of `config.seed`; the batches already trained on are skipped), so with
    `train.deterministic` it ends with the weights of an uninterrupted run.

    A SIGTERM (a preemptible machine being reclaimed) stops training after
    the current step on every worker, saves a checkpoint, and raises
    `TrainingInterrupted`; the rerun of the same command continues from it.

    Args:
        config: the run's `ConfigDict`.
        workdir: where checkpoints, summaries, `config.json` and
            `metrics.json` go.
        strategy: a `tf.distribute.Strategy` (default: `auto`).
        log: where progress lines go.
        task: the run's `Task` if the caller built it already (one task per
            run); built from `config` otherwise.
    """
    strategy = strategy or strategy_lib.create_strategy("auto")
    chief = strategy_lib.is_chief(strategy)
    num_replicas = strategy.num_replicas_in_sync
    tcfg = config.train
    global_batch = int(tcfg.batch_size)
    if global_batch % num_replicas:
        raise ConfigError(f"train.batch_size={global_batch} must be divisible by the {num_replicas} replicas")

    if tcfg.deterministic:
        # Kernels without a deterministic implementation raise instead of
        # running; tf.data keeps its element order (it does by default here).
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(int(config.seed))
    task = task or build_task(config)
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

    def dataset_fn(input_context):
        # Each input pipeline feeds num_replicas / num_pipelines replicas, one
        # batch each per step: skip what the interrupted run consumed.
        ds = task.train_dataset(input_context)
        per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return ds.skip(start_step * per_step) if start_step else ds

    dist_ds = strategy.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dist_ds)

    replica_step = _make_replica_step(task, model, optimizer, global_batch, num_replicas,
                                      tcfg.get("grad_clip_norm", 0.0), int(tcfg.get("cka_warmup_steps", 0)))

    @tf.function
    def train_step(it, stop_requested):
        optimizer.learning_rate.assign(schedule(optimizer.iterations) * plateau.scale)
        loss, metrics, stop = strategy.run(replica_step, args=(next(it), stop_requested))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        metrics = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in metrics.items()}
        # Every replica holds the cluster-wide count already (all-reduced in the step).
        stop = strategy.experimental_local_results(stop)[0]
        return loss, metrics, stop

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
    multi_worker = strategy_lib.is_multi_worker(strategy)
    with preemption.SigtermFlag() as sigterm:
        while step < num_steps:
            try:
                # A bad record becomes one DataError line (the task knows its records' hints).
                with task.error_context():
                    loss, metrics, stop = train_step(iterator, tf.constant(float(sigterm.raised), tf.float32))
            except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                    tf.errors.CancelledError, tf.errors.InternalError) as e:
                if not multi_worker:
                    raise
                lost = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", str(e)))) or ["unknown"]
                raise TrainingInterrupted(
                    f"a worker of the cluster stopped responding during step {step + 1} ({', '.join(lost)}: "
                    f"{type(e).__name__}); the last "
                    f"checkpoint is {_checkpoint_or_none(keeper)}: restart every worker with the same command to "
                    "resume from it") from None
            step += 1
            steps_since += 1
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss became {loss_value} at step {step}; training stopped and the last good checkpoint "
                    f"({_checkpoint_or_none(keeper)}) is kept; lower optimizer.learning_rate or set "
                    "train.grad_clip_norm")
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
            if float(stop) > 0:
                # Every worker saw the same flag (all-reduced), so all of them save together.
                path = keeper.save(step)
                raise TrainingInterrupted(
                    f"SIGTERM at step {step}/{num_steps}: saved checkpoint {path if chief else keeper.latest}; "
                    "rerun the same command to resume from it")
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
        raise CheckpointError(f"--workdir={workdir} has no checkpoint in {checkpoints.CHECKPOINT_DIR}/; "
                              "expected the workdir of a `train` run")
    status = keeper.checkpoint.restore(path)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model of {workdir}/config.json ({e})") from e
    status.expect_partial()
    return task, model
