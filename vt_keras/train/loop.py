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

from vt_keras.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from vt_keras.train import checkpoints, preemption, step as step_lib, strategy as strategy_lib
from vt_keras.train.schedules import LearningRate, ReduceOnPlateau, build_optimizer

METRICS_FILE = "metrics.json"


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


def train(task, workdir, strategy=None, log=print):
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
        task: the run's `Task` (`vt_keras.tasks.build_task(config)`); its
            `config` holds every setting.
        workdir: where checkpoints, summaries, `config.json` and
            `metrics.json` go.
        strategy: a `tf.distribute.Strategy` (default: `auto`).
        log: where progress lines go.
    """
    config = task.config
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
    checkpoints.check_same_model(config, workdir)
    if chief:
        checkpoints.save_config(config, workdir)

    schedule = LearningRate.from_config(config.optimizer, tcfg.num_steps)
    plateau = ReduceOnPlateau(
        monitor=config.optimizer.plateau_monitor,
        mode=config.optimizer.plateau_mode,
        patience=config.optimizer.plateau_patience,
        factor=config.optimizer.plateau_factor,
    )
    precision = step_lib.check_precision(tcfg.precision)
    with step_lib.dtype_policy(precision), strategy.scope():
        model = task.build_model()
        optimizer = step_lib.wrap_optimizer(build_optimizer(config.optimizer), precision)
        optimizer.build(model.trainable_variables)
        task.warm_start(model)
    # Steps taken, skipped float16 steps included (the optimizer counts applied updates only).
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    keeper = checkpoints.CheckpointKeeper(
        workdir, chief=chief, max_to_keep=tcfg.keep_checkpoints,
        model=model, optimizer=optimizer, step=step_var, **plateau.trackables(), **task.trackables())
    restored = keeper.restore()
    start_step = int(step_var.numpy())
    if restored:
        log(f"resumed from {restored} at step {start_step}")

    def dataset_fn(input_context):
        # Each input pipeline feeds num_replicas / num_pipelines replicas, one
        # batch each per step: skip what the interrupted run consumed.
        per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return task.train_dataset(input_context, skip_batches=start_step * per_step)

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    jit_compile = bool(tcfg.jit_compile)
    replica_step = step_lib.make_replica_step(
        task, model, optimizer, step_var, global_batch_size=global_batch, num_replicas=num_replicas,
        clip_norm=tcfg.grad_clip_norm, warmup_steps=int(tcfg.cka_warmup_steps),
        jit_compile=jit_compile)

    def set_learning_rate():
        optimizer.learning_rate.assign(schedule(step_var) * plateau.scale)

    train_loop = step_lib.make_train_loop(strategy, replica_step, step_var, set_learning_rate)

    writer = tf.summary.create_file_writer(os.path.join(workdir, "train")) if chief else None
    eval_writer = tf.summary.create_file_writer(os.path.join(workdir, "eval")) if chief else None
    num_steps = int(tcfg.num_steps)
    log_every = max(int(tcfg.log_every), 1)
    ckpt_every = int(tcfg.checkpoint_every)
    eval_every = int(tcfg.eval_every)
    steps_per_loop = int(tcfg.steps_per_loop)
    if steps_per_loop < 1:
        raise ConfigError(f"train.steps_per_loop={steps_per_loop}: expected >= 1 (steps per host round trip)")
    last_saved = start_step if restored else -1
    step = start_step
    t_last, steps_since = time.time(), 0
    log(f"training {config.task} to step {num_steps} on {num_replicas} replica(s), "
        f"global batch {global_batch}, {precision}{', XLA' if jit_compile else ''}, workdir {workdir}")
    multi_worker = strategy_lib.is_multi_worker(strategy)
    with preemption.SigtermFlag() as sigterm:
        while step < num_steps:
            # A loop ends at the next step that logs, saves or evaluates, so those
            # happen at the same steps whatever steps_per_loop is.
            n = min(steps_per_loop, num_steps - step, *(every - step % every for every in
                                                         (log_every, ckpt_every, eval_every) if every))
            try:
                # A bad record becomes one DataError line (the task knows its records' hints).
                with task.error_context():
                    loss, metrics, stop, finite = train_loop(
                        iterator, tf.constant(n, tf.int64), tf.constant(float(sigterm.raised), tf.float32))
            except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                    tf.errors.CancelledError, tf.errors.InternalError) as e:
                if not multi_worker:
                    raise
                lost = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", str(e)))) or ["unknown"]
                raise TrainingInterrupted(
                    f"a worker of the cluster stopped responding during step {step + 1} ({', '.join(lost)}: "
                    f"{type(e).__name__}); the last checkpoint is {_checkpoint_or_none(keeper)}: restart every "
                    "worker with the same command to resume from it") from None
            except tf.errors.InvalidArgumentError as e:
                unsupported = step_lib.unsupported_by_xla(e) if jit_compile else None
                if unsupported is None:
                    raise
                raise ConfigError(
                    f"train.jit_compile=true: XLA cannot compile the {', '.join(unsupported)} op(s) of this "
                    f"{config.task} model's step on {strategy.extended.worker_devices[0]}; set "
                    "--config.train.jit_compile=false") from None
            step += n
            steps_since += n
            loss_value = float(loss)
            if not bool(finite) or not math.isfinite(loss_value):
                when = (f"loss became {loss_value} at step {step}" if not math.isfinite(loss_value) else
                        f"loss became nan or inf in steps {step - n + 1}..{step}")
                raise TrainingDiverged(
                    f"{when}; training stopped and the last good checkpoint ({_checkpoint_or_none(keeper)}) is "
                    "kept; lower optimizer.learning_rate or set train.grad_clip_norm")
            if step % log_every == 0 or step == num_steps:
                elapsed = time.time() - t_last
                ex_per_sec = steps_since * global_batch / max(elapsed, 1e-9)
                lr = float(optimizer.learning_rate.numpy())
                scalars = {"loss": loss_value, "learning_rate": lr, "examples_per_sec": ex_per_sec}
                scalars.update({k: float(v) for k, v in metrics.items()})
                _write_scalars(writer, step, scalars)
                extra = " ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
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
