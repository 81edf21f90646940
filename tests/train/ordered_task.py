"""Tasks for trainer tests, registered under names that configs can give in `task`.

- `test_ordered`: the YouTube-8M task whose training stream is the same
  sequence of *global* batches however many replicas and workers share it
  (rows of the data in file order, repeated; global batch k is rows
  `[kB, (k+1)B)` modulo the data size, split into per-replica chunks). One
  device, two replicas and two workers then train on identical global
  batches, so their weights agree up to float rounding. It also keeps the
  model's variables as built (`initial_variables`), before any step, so
  tests can check that training moved them.
- `test_nan_at_step_3` / `test_inf_at_step_3`: their loss turns NaN / +Inf
  from the fourth step on.
"""
import numpy as np
import tensorflow as tf

from vt_keras.tasks.yt8m import YT8MClassification
from vt_keras.train.task import TASKS


@TASKS.register("test_ordered")
class OrderedYT8M(YT8MClassification):
    """YouTube-8M classification on a replica-count-independent stream of global batches."""

    initial_variables = None  # {path: numpy array} of the last model built, before training

    def build_model(self):
        model = super().build_model()
        OrderedYT8M.initial_variables = {v.path: np.array(v.numpy()) for v in model.variables}
        return model

    def _rows(self):
        with self.error_context():
            batch = next(iter(self.dataset(self.config.data.train_pattern, 100_000)))
        return {k: v.numpy() for k, v in batch.items()}

    def train_dataset(self, input_context, skip_batches=0):
        replicas = input_context.num_replicas_in_sync
        per_pipeline = replicas // input_context.num_input_pipelines
        pipeline = input_context.input_pipeline_id
        per_replica = input_context.get_per_replica_batch_size(int(self.config.train.batch_size))
        chunks = tf.data.Dataset.from_tensor_slices(self._rows()).repeat().batch(per_replica, drop_remainder=True)
        # Chunk c goes to replica c mod replicas; this pipeline feeds replicas
        # [pipeline * per_pipeline, (pipeline + 1) * per_pipeline).
        mine = chunks.enumerate().filter(lambda c, _: (c % replicas) // per_pipeline == pipeline)
        return mine.map(lambda c, batch: batch).skip(skip_batches)


def _bad_from_step_3(value):
    @TASKS.register(f"test_{'nan' if np.isnan(value) else 'inf'}_at_step_3")
    class BadAtStep3(YT8MClassification):
        def loss_fn(self, model, batch, ctx):
            loss, metrics = super().loss_fn(model, batch, ctx)
            return tf.where(ctx.step >= 3, tf.constant(value, loss.dtype), loss), metrics

    return BadAtStep3


NanAtStep3 = _bad_from_step_3(np.nan)
InfAtStep3 = _bad_from_step_3(np.inf)


@TASKS.register("test_overflow_at_step_0")
class OverflowAtStep0(OrderedYT8M):
    """The first step's loss is multiplied by 1e35: times a float16 loss scale of 2^15 it overflows."""

    def loss_fn(self, model, batch, ctx):
        loss, metrics = super().loss_fn(model, batch, ctx)
        return tf.where(ctx.step == 0, loss * 1e35, loss), metrics


@TASKS.register("test_not_xla_compilable")
class NotXlaCompilable(OrderedYT8M):
    """Its loss passes through a Python function, which XLA cannot compile."""

    def loss_fn(self, model, batch, ctx):
        loss, metrics = super().loss_fn(model, batch, ctx)
        return tf.py_function(lambda x: x, [loss], tf.float32), metrics
