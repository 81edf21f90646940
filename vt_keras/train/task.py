"""The contract between a task and the one training loop.

A task (YouTube-8M classification, correlation tower, retrieval, CKA
synthetic, ...) subclasses `Task` and registers itself in `TASKS` under the
name a config gives in `config.task`. The loop in `vt_keras.train.loop` does
everything else: strategy, distributed datasets, optimizer, checkpoints,
summaries, progress line, NaN guard.

Loss convention. `loss_fn` runs once per replica inside `strategy.run` and
returns that replica's *contribution*; the loop sums contributions over
replicas and the optimizer applies the summed gradient. `StepContext` has the
two helpers that get the scaling right:

- `ctx.mean_over_global_batch(per_example)`: for losses that are a mean over
  examples, `sum(per_example) / global_batch_size`.
- `ctx.global_scalar(value)`: for a loss already computed over the whole
  global batch (after `ctx.gather`), `value / num_replicas`.

Losses a model adds with `add_loss` (e.g. `CKAAlignment`) are global scalars
and the loop divides them by `num_replicas` itself. During an alignment
warm-up, `ctx.main_weight` is 0: a task multiplies its main objective by it.
"""
import dataclasses
from typing import Callable

from vt_keras.data.checks import data_errors
from vt_keras.registry import Registry

TASKS = Registry("task")


@dataclasses.dataclass
class StepContext:
    """What a replica's loss function knows about the step it is in."""

    global_batch_size: int
    num_replicas: int
    gather: Callable  # gather(x, axis=0): the global batch on every replica
    step: object = None  # the optimizer's iteration count, a scalar tensor
    training: bool = True
    # 0.0 during the alignment warm-up (`train.cka_warmup_steps`), 1.0 after:
    # tasks multiply their main objective by it and keep alignment terms, so
    # the first steps optimise the alignment (CKA) alone, as Yun et al. do.
    main_weight: object = 1.0

    def mean_over_global_batch(self, per_example):
        import tensorflow as tf

        return tf.reduce_sum(per_example) / float(self.global_batch_size)

    def global_scalar(self, value):
        return value / float(self.num_replicas)


class Task:
    """Base class of a task; see the module docstring for the contract."""

    def __init__(self, config):
        self.config = config
        # The seed of the training data stream (shuffles); a resumed run
        # skips what it consumed instead of reshuffling.
        self.data_seed = int(config.seed)

    @classmethod
    def prepare_config(cls, config, log=print):
        """Fills config values derived from the data (before the config is saved).

        Returns True when the task substituted its embedded default data.
        """
        del config, log
        return False

    def build_model(self):
        """Returns an (unbuilt or built) `keras.Model`."""
        raise NotImplementedError

    def train_dataset(self, input_context, skip_batches=0):
        """A `tf.data.Dataset` of per-replica batches for one input pipeline.

        `input_context` is a `tf.distribute.InputContext`: shard files by
        `input_pipeline_id` / `num_input_pipelines` and batch with
        `get_per_replica_batch_size(config.train.batch_size)`; repeat forever
        and drop the remainder so every replica sees the same shapes. The
        stream must be a function of `config.seed` (`self.data_seed`), and
        its first `skip_batches` batches are left out, before parsing where
        the reader allows (the readers' `skip_batches`): a resumed run
        continues where the interrupted one stopped.
        """
        raise NotImplementedError

    def loss_fn(self, model, batch, ctx):
        """Returns `(loss_contribution, {name: scalar})` for one replica's batch."""
        raise NotImplementedError

    def evaluate(self, model, pattern, **kwargs):
        """Evaluates `model` on the files of `pattern`; returns a flat dict of floats."""
        raise NotImplementedError

    def export(self, model, export_dir):
        """Writes a SavedModel with this task's serving signatures; returns its path, or None.

        The default exports nothing (a task without serving signatures).
        """
        del model, export_dir
        return None

    def error_context(self):
        """A context manager that turns this task's data check failures into one-line `DataError`s.

        The trainer and the evaluation wrap every pull from the task's
        datasets in it. The default knows the marked lines of
        `vt_keras.data.checks`; a task whose records need more hints
        (e.g. video-text records) returns its own.
        """
        return data_errors()

    def baseline(self, train_pattern, eval_pattern):
        """Metrics of a data-only baseline to print beside the model's, or None (no baseline)."""
        del train_pattern, eval_pattern
        return None

    def after_sweep(self, workdir, results):
        """Called once after a `sweep` config trained every value: summaries, plots. Default: nothing."""
        del workdir, results

    def trackables(self):
        """Extra state to checkpoint beside model and optimizer (e.g. a loss queue)."""
        return {}

    def warm_start(self, model):
        """Loads frozen parts (e.g. a trained correlation tower) into `model`."""
        del model

    def format_results(self, results, baseline=None):
        """The printable table of final metrics (beside a baseline's, if given)."""
        lines = []
        for k, v in sorted(results.items()):
            extra = f"   baseline {baseline[k]:.4f}" if baseline and k in baseline else ""
            lines.append(f"{k:<24} {v:.4f}{extra}" if isinstance(v, float) else f"{k:<24} {v}")
        return "\n".join(lines)

    def summary_line(self, metrics):
        """A one-line human summary of evaluation metrics for the console."""
        return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))


def fill_default_data(data_cfg, ensure_data, what, log=print):
    """Points an empty `data.train_pattern` (and empty eval/test patterns) at a task's embedded data.

    Args:
        data_cfg: the config's `data` ConfigDict.
        ensure_data: a function that generates the data once into the cache
            and returns its directory (with `train-*`, `validate-*` and
            `test-*` files).
        what: the data's name in the log lines.
        log: where the two progress lines go.

    Returns:
        True when the embedded data was substituted.
    """
    import os

    if data_cfg.train_pattern:
        return False
    log(f"{what}: generating it once into the cache if missing ...")
    root = ensure_data()
    log(f"{what}: {root}")
    data_cfg.train_pattern = os.path.join(root, "train-*.tfrecord")
    data_cfg.eval_pattern = data_cfg.eval_pattern or os.path.join(root, "validate-*.tfrecord")
    if "test_pattern" in data_cfg and not data_cfg.test_pattern:
        data_cfg.test_pattern = os.path.join(root, "test-*.tfrecord")
    return True
