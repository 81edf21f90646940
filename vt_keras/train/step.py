"""One training step per replica, and a loop of steps inside one `tf.function` call.

The replica step: the task's loss on this replica's batch (plus the global
`add_loss` terms of the model), its gradient, optional clipping of the
global gradient norm, and the optimizer update. Three levers change how,
never what, it computes:

- **Mixed precision** (`train.precision`): the model computes in float16 or
  bfloat16 while its variables, softmaxes, norms and losses stay float32.
  With float16 the loss is multiplied by a dynamic scale before the
  gradient (Keras' `LossScaleOptimizer`): a step whose gradients overflow
  is skipped and the scale halved; after 2,000 good steps it doubles.
- **XLA** (`train.jit_compile`): the forward and backward pass (loss and
  gradients) is one XLA cluster; clipping, the cross-replica sums and the
  optimizer update stay outside it, since collective ops do not compile on
  every device.
- **Steps per loop** (`train.steps_per_loop`): `make_train_loop` runs N
  steps in one call, so the host reads the loss and writes logs every N
  steps only.

The gradient is summed over replicas by the optimizer; where the step needs
the summed gradient itself (clipping the global norm, or a finiteness
verdict that every replica shares under loss scaling) it sums first and
hands each replica 1/N of the sum, which the optimizer sums back.
"""
import re

import keras
import tensorflow as tf

from vt_keras import distributed
from vt_keras.errors import ConfigError
from vt_keras.train.task import StepContext

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision={precision!r} is unknown; expected one of {', '.join(PRECISIONS)}")
    return precision


class dtype_policy:  # noqa: N801  (a context manager, used like a function)
    """Sets Keras' global dtype policy while a model is built, then restores the previous one.

    Layers take the policy at construction: a model built under
    `mixed_float16` computes in float16 ever after.
    """

    def __init__(self, precision):
        self.precision = check_precision(precision)
        self._previous = None

    def __enter__(self):
        self._previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)
        return self

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self._previous)
        return False


def wrap_optimizer(optimizer, precision):
    """The optimizer to train with: under `mixed_float16`, inside a dynamic `LossScaleOptimizer`."""
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _loss_scaling(optimizer):
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def make_replica_step(task, model, optimizer, step, *, global_batch_size, num_replicas, clip_norm=0.0,
                      warmup_steps=0, jit_compile=False):
    """Returns `replica_step(batch, stop_requested) -> (loss, metrics, stop)` for `strategy.run`.

    Args:
        task: the `Task` (its `loss_fn` gives this replica's contribution).
        model: the model being trained.
        optimizer: its optimizer (a `LossScaleOptimizer` under float16).
        step: the run's step counter (a scalar int64 variable).
        global_batch_size, num_replicas: of the strategy.
        clip_norm: clip the global gradient norm to this (0: no clipping).
        warmup_steps: steps of alignment-only training (`ctx.main_weight`
            is 0 before, 1 after).
        jit_compile: compile the loss and gradient computation with XLA.

    `stop` is `stop_requested` summed over every replica of the cluster.
    """
    variables = model.trainable_variables
    scaling = _loss_scaling(optimizer)

    def loss_and_grads(batch):
        main_weight = 1.0
        if warmup_steps:
            main_weight = tf.cast(step >= warmup_steps, tf.float32)
        ctx = StepContext(global_batch_size=global_batch_size, num_replicas=num_replicas,
                          gather=distributed.replica_gather, step=step, main_weight=main_weight)
        with tf.GradientTape() as tape:
            loss, metrics = task.loss_fn(model, batch, ctx)
            loss = tf.cast(loss, tf.float32)
            extra = [tf.cast(x, tf.float32) for x in model.losses]
            if extra:
                # add_loss terms (e.g. CKAAlignment) are global scalars.
                loss = loss + tf.add_n(extra) / float(num_replicas)
            scaled = optimizer.scale_loss(loss) if scaling else loss
        return loss, dict(metrics), tape.gradient(scaled, variables)

    if jit_compile:
        compiled = tf.function(loss_and_grads, jit_compile=True)

        def loss_and_grads(batch):  # noqa: F811
            # XLA takes no string tensors (ids, captions): a loss that needs them cannot compile.
            if isinstance(batch, dict):
                strings = sorted(k for k, v in batch.items() if v.dtype == tf.string)
                batch = {k: v for k, v in batch.items() if v.dtype != tf.string}
            try:
                return compiled(batch)
            except KeyError as e:
                raise ConfigError(f"train.jit_compile=true: the {task.__class__.__name__} loss reads the string "
                                  f"input {e} ({', '.join(strings)} are strings), which XLA cannot take; set "
                                  "--config.train.jit_compile=false") from None

    def replica_step(batch, stop_requested):
        loss, metrics, grads = loss_and_grads(batch)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads = [g for g, _ in pairs]
        rctx = tf.distribute.get_replica_context()
        summed = num_replicas > 1 and bool(clip_norm or scaling)
        if summed:
            grads = rctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if clip_norm:
            # Under loss scaling the gradients carry the scale: clip at the scaled norm.
            scale = tf.cast(optimizer.dynamic_scale, tf.float32) if scaling else 1.0
            grads, norm = tf.clip_by_global_norm(grads, clip_norm * scale)
            # The global norm of the whole step's gradient, before clipping.
            metrics["grad_norm"] = norm / scale
        if summed:
            grads = [g / float(num_replicas) for g in grads]
        # A LossScaleOptimizer unscales, and skips the update (halving the scale) when
        # a gradient is not finite: every replica holds the same sum, so all agree.
        optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
        if scaling:
            metrics["loss_scale"] = tf.identity(optimizer.dynamic_scale)
        # A SIGTERM on any worker stops all of them after the same step.
        # (identity: a copy on this replica's device; all_reduce sends results to the input's device.)
        stop = rctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(stop_requested))
        return loss, metrics, stop

    return replica_step


def make_train_loop(strategy, replica_step, step, before_step):
    """Returns a `tf.function` `train_loop(iterator, num_steps, stop_requested)` that runs `num_steps` steps.

    Args:
        strategy: the `tf.distribute.Strategy`.
        replica_step: from `make_replica_step`.
        step: the run's step counter, incremented once per step.
        before_step: called (in the graph) before each step, e.g. to set
            the learning rate of the step.

    Returns `(loss, metrics, stop, finite)` of the last step, where `finite`
    says whether every step's loss was finite. `num_steps` is a tensor, so
    loops of any length share one trace.
    """

    def one_step(iterator, stop_requested):
        before_step()
        loss, metrics, stop = strategy.run(replica_step, args=(next(iterator), stop_requested))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        metrics = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in metrics.items()}
        # Every replica holds the cluster-wide count already (all-reduced in the step).
        stop = strategy.experimental_local_results(stop)[0]
        step.assign_add(1)
        return loss, metrics, stop

    @tf.function
    def train_loop(iterator, num_steps, stop_requested):
        loss, metrics, stop = one_step(iterator, stop_requested)
        finite = tf.math.is_finite(loss)
        for _ in tf.range(num_steps - 1):
            loss, metrics, stop = one_step(iterator, stop_requested)
            finite = tf.logical_and(finite, tf.math.is_finite(loss))
        return loss, metrics, stop, finite

    return train_loop


def unsupported_by_xla(error):
    """The op names of an XLA compilation failure, or None when `error` is something else."""
    text = str(error)
    if "unsupported operations" not in text and "XLA compilation requires" not in text:
        return None
    ops = sorted(set(re.findall(r"([A-Za-z0-9_]+) \(No registered '", text)))
    return ops or ["(see TensorFlow's message)"]
