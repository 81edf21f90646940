"""YouTube-8M video classification: frame-level records in, class scores out.

The task of configs/yt8m/classifier.py: the classifier of
`vt_keras.models.video_classifier`, the starter code's multi-label
cross-entropy, and GAP / MAP / PERR / Hit@1 per taxonomy level
(`vt_keras.metrics.yt8m`). The video-level task
(`vt_keras.tasks.yt8m_video`) is this one on `tf.train.Example`s. With
`data.segment_labels=True` it trains and evaluates on the rated segments of
the 2019 files (`vt_keras.tasks.yt8m_segments`).
"""
import contextlib
import os

import numpy as np
import tensorflow as tf

from vt_keras import export
from vt_keras.data import synthetic, yt8m
from vt_keras.data.quantization import dequantize_frames
from vt_keras.data.taxonomy import Taxonomy, find_taxonomy, load_taxonomy
from vt_keras.errors import ConfigError, DataError
from vt_keras.metrics.categories import CategoryMetrics, category_classes, format_category_table
from vt_keras.metrics.yt8m_accumulator import YT8MMetrics, format_table
from vt_keras.models.video_classifier import (CKA_LAYER, TOWER_LAYER, alignment_view, build_tower_model,
                                              build_video_classifier)
from vt_keras.tasks.warm_start import check_init_workdir, load_workdir_weights
from vt_keras.tasks.yt8m_segments import RatedSegments, fill_default_segment_data
from vt_keras.train import checkpoints
from vt_keras.train.checkpoints import track_variables
from vt_keras.train.task import TASKS, Task, fill_default_data

EPSILON = 1e-7


def multilabel_cross_entropy(labels, probs, label_weights=None):
    """Per-example binary cross-entropy summed over classes (the starter code's loss), float32.

    Args:
        labels: `[B, C]` targets in [0, 1].
        probs: `[B, C]` predicted probabilities.
        label_weights: optional `[B, C]` weight of each class's term (the
            starter code's segment training: 1 for the rated class, 0 for the
            others, so unrated classes add nothing).

    Returns:
        float32 `[B]`: `Σ_c w_c · CE(labels_c, probs_c)`.

    Example:
        >>> per_example = multilabel_cross_entropy(batch["labels"], probs, batch["label_weights"])
    """
    labels = tf.cast(labels, tf.float32)
    probs = tf.clip_by_value(tf.cast(probs, tf.float32), EPSILON, 1.0 - EPSILON)
    ce = -(labels * tf.math.log(probs) + (1.0 - labels) * tf.math.log(1.0 - probs))
    if label_weights is not None:
        ce = ce * tf.cast(label_weights, tf.float32)
    return tf.reduce_sum(ce, axis=-1)


# The task that trains the correlation tower the cm_* fusions load (tasks/correlation_tower.py).
TOWER_TASK = "correlation_tower"


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


@TASKS.register("yt8m")
class YT8MClassification(RatedSegments, Task):
    """Multi-label classification of frame-level YouTube-8M records."""

    # Frames leave the input pipeline as uint8 codes and become floats in the step, on the
    # accelerator (`model_inputs`): a quarter of the host-side bytes. A subclass that reads frame
    # values outside the model sets "float32".
    input_dtype = "uint8"

    # A data error that found the other kind of record (the readers name it) gets this hint.
    OTHER_KIND = ("(a video-level tf.train.Example)",
                  ("this config reads frame-level records; for video-level files use configs/yt8m/video_moe.py or "
                   "configs/yt8m/video_logistic.py"))

    # The records this task reads outside segment mode, for the default data.
    DEFAULT_DATA = staticmethod(synthetic.ensure_default_data)
    DEFAULT_DATA_NAME = "embedded default data"

    def __init__(self, config):
        super().__init__(config)
        self._alignment_views = {}  # id(model) -> alignment_view(model), built on first use

    @classmethod
    def prepare_config(cls, config, log=print):
        """Empty `data.train_pattern`: the embedded default data; `num_classes` 0: from its taxonomy.

        Then checks `model.init_workdir`, where the config has one (`check_init_workdir`).
        """
        d = config.data
        if d.segment_labels:
            # Rated segments live in frame-level records, whatever the model reads.
            used_default = fill_default_segment_data(d, synthetic.ensure_default_data, log)
        else:
            used_default = fill_default_data(d, cls.DEFAULT_DATA, cls.DEFAULT_DATA_NAME, log)
        if not d.eval_pattern:
            raise ConfigError("data.eval_pattern is empty; expected the validation files' pattern")
        if int(d.num_classes) <= 0:
            path = find_taxonomy(d.train_pattern)
            if path is None:
                raise ConfigError(f"data.num_classes={d.num_classes} and no taxonomy.json beside "
                                  f"{d.train_pattern}; set --config.data.num_classes (3862 for YouTube-8M)")
            d.num_classes = Taxonomy.load(path).num_classes
        # Before bin/train saves the config: a wrong warm start must leave no workdir behind. The
        # correlation tower's config has no model.init_workdir (it warm-starts from nothing).
        if "init_workdir" in config.model:
            check_init_workdir(config)
        return used_default

    @property
    def features(self):
        return tuple((str(n), int(d)) for n, d in self.config.data.features)

    @property
    def num_classes(self):
        return int(self.config.data.num_classes)

    @property
    def max_frames(self):
        return int(self.config.data.max_frames)

    def build_model(self):
        model = build_video_classifier(self.config.model, self.features, self.num_classes, self.max_frames)
        return track_variables(model)

    def warm_start(self, model):
        """Loads the trained correlation tower of a cm_* classifier, then the weights of `model.init_workdir`.

        The classifier's `correlation_tower` layer is frozen, so the loaded
        weights stay as trained. Other fusions load no tower. A tower workdir
        of another task, tower size or feature sizes is one `ConfigError`
        line; a missing or unfitting checkpoint one `CheckpointError` line.
        A non-empty `model.init_workdir` then loads every weight of that
        workdir's latest checkpoint (see `load_workdir_weights`).
        """
        self._load_tower(model)
        load_workdir_weights(model, self.config)

    def _load_tower(self, model):
        if not self.config.model.fusion.startswith("cm_"):
            return
        workdir, model_cfg = self.config.model.tower_workdir, self.config.model
        if not workdir:
            raise ConfigError(f"model.tower_workdir is empty; model.fusion={model_cfg.fusion!r} needs the workdir "
                              "of a trained correlation tower (bin/train --config=configs/yt8m/correlation_tower.py)")
        what = "the workdir of a trained correlation tower"
        latest = checkpoints.latest_checkpoint(workdir, what, name=f"model.tower_workdir={workdir}")
        saved = checkpoints.load_config(workdir)
        where = os.path.join(workdir, checkpoints.CONFIG_FILE)
        if saved.get("task") != TOWER_TASK:
            raise ConfigError(f"model.tower_workdir={workdir}: {where} has task={saved.get('task')!r}; expected "
                              f"{TOWER_TASK!r}")
        # The keys that fix the tower's weights (dropout does not; the frozen copy has none).
        shape = ("hidden_units", "embedding_dim")
        mine = {k: _as_list(model_cfg.tower[k]) for k in shape}
        theirs = {k: _as_list(saved.model.tower[k]) for k in shape}
        if mine != theirs:
            raise ConfigError(f"model.tower={mine} does not match the tower in model.tower_workdir ({where}: "
                              f"model.tower={theirs}); set model.tower to the tower's values")
        dims, saved_features = [d for _, d in self.features], [(str(n), int(d)) for n, d in saved.data.features]
        if dims != [d for _, d in saved_features]:
            raise ConfigError(f"data.features={list(self.features)} does not match the tower in "
                              f"model.tower_workdir ({where}: data.features={saved_features})")
        tower_model = track_variables(build_tower_model(saved.model, saved_features))
        checkpoints.restore_verified(latest, f"the correlation tower of {where}", "retrain the tower",
                                     model=tower_model)
        model.get_layer(TOWER_LAYER).set_weights(tower_model.get_layer(TOWER_LAYER).get_weights())

    @contextlib.contextmanager
    def error_context(self):
        """`data_errors()`, with a pointer to the right config when the records are of the other kind."""
        found, hint = self.OTHER_KIND
        if self.segment_labels:
            found, hint = YT8MClassification.OTHER_KIND[0], ("data.segment_labels=true reads the rated segments "
                                                             "of frame-level records (the 2019 validate/test files)")
        try:
            with yt8m.data_errors():
                yield
        except DataError as e:
            if found not in str(e):
                raise
            raise DataError(f"{e}; {hint}") from None

    def dataset(self, pattern, batch_size, training=False, input_context=None, skip_batches=0):
        if self.segment_labels:
            return self.rated_segment_dataset(pattern, batch_size, training, input_context, skip_batches)
        d = self.config.data
        return yt8m.frame_dataset(
            pattern, batch_size, features=self.features, max_frames=self.max_frames,
            num_classes=self.num_classes, shuffle=training, repeat=training, drop_remainder=training,
            input_context=input_context, seed=self.data_seed, skip_batches=skip_batches,
            skip_corrupt_records=d.skip_corrupt_records, dtype=self.input_dtype,
            l2_normalize=d.l2_normalize and self.input_dtype == "float32")

    def train_dataset(self, input_context, skip_batches=0):
        per_replica = input_context.get_per_replica_batch_size(int(self.config.train.batch_size))
        return self.dataset(self.config.data.train_pattern, per_replica, training=True,
                            input_context=input_context, skip_batches=skip_batches)

    def model_inputs(self, batch):
        """The model's inputs from a batch of `dataset`: frames dequantized (and normalised) here if codes."""
        names = [name for name, _ in self.features]
        frames, mask = [batch[name] for name in names], batch["mask"]
        if frames[0].dtype == tf.uint8:
            # Keras calls take all tensors or all arrays: the mask follows the dequantized frames.
            mask = tf.convert_to_tensor(mask)
            frames = dequantize_frames(frames, mask, l2_normalize=self.config.data.l2_normalize)
        inputs = dict(zip(names, frames))
        inputs["mask"] = mask
        return inputs

    def per_example_loss(self, batch, probs):
        """The starter code's cross-entropy of each example; rated segments count their rated class only."""
        weights = batch["label_weights"] if self.segment_labels else None
        return multilabel_cross_entropy(batch["labels"], probs, weights)

    def loss_fn(self, model, batch, ctx):
        metrics, alignment = {}, 0.0
        if self.config.model.cka.weight > 0:
            view = self._alignment_views.get(id(model))
            if view is None:
                view = self._alignment_views[id(model)] = alignment_view(model)
            probs, term = view(self.model_inputs(batch), training=True)
            # -λ·CKA of this step's global batch, added once over the replicas.
            alignment = ctx.global_scalar(tf.cast(term, tf.float32))
            metrics["cka"] = tf.identity(model.get_layer(CKA_LAYER).last_cka)
        else:
            probs = model(self.model_inputs(batch), training=True)
        per_example = self.per_example_loss(batch, probs)
        # main_weight is 0 during the CKA-only warm-up (train.cka_warmup_steps).
        return ctx.main_weight * ctx.mean_over_global_batch(per_example) + alignment, metrics

    def predict(self, model, pattern, batch_size=None, with_ids=False):
        """Yields `(ids, probabilities, labels)` numpy batches over the files of `pattern`."""
        batch_size = batch_size or self.config.eval.batch_size
        ds = self.dataset(pattern, batch_size, training=False)

        @tf.function
        def forward(batch):
            return model(self.model_inputs(batch), training=False)

        for batch in yt8m.iterate(ds):
            probs = forward(batch)
            yield batch["id"].numpy(), np.asarray(probs, np.float32), batch["labels"].numpy()

    def taxonomy(self, pattern):
        """The `Taxonomy` of `data.taxonomy` ('auto': taxonomy.json beside the files), or None."""
        return load_taxonomy(self.config.data.taxonomy, pattern, self.num_classes)

    def evaluate(self, model, pattern, **kwargs):
        """Metrics overall, per taxonomy level and per top-level category (`vt_keras.metrics.categories`)."""
        if self.segment_labels:
            return self.evaluate_rated_segments(model, pattern)
        taxonomy = self.taxonomy(pattern)
        top_k = self.config.eval.top_k
        acc = YT8MMetrics(self.num_classes, top_k=top_k, taxonomy=None if taxonomy is None else taxonomy.levels())
        accumulators = [acc]
        if taxonomy is not None:
            categories = category_classes([c.parent for c in taxonomy.classes], [c.name for c in taxonomy.classes])
            accumulators.append(CategoryMetrics(self.num_classes, categories, top_k=top_k))
        for _, probs, labels in self.predict(model, pattern):
            for accumulator in accumulators:
                accumulator.update(probs, labels)
        return {k: float(v) for a in accumulators for k, v in a.result().items()}

    def baseline(self, train_pattern, eval_pattern):
        """Metrics of scoring every video with the training label frequencies.

        Rated segments: every pair is scored with its class's fraction of
        positive ratings among the training pairs.
        """
        if self.segment_labels:
            return self._rated_segments_baseline(train_pattern, eval_pattern)
        counts = np.zeros(self.num_classes, np.float64)
        total = 0
        for batch in yt8m.iterate(self.dataset(train_pattern, 512)):
            counts += batch["labels"].numpy().sum(0)
            total += batch["labels"].shape[0]
        prior = (counts / max(total, 1)).astype(np.float32)
        acc = YT8MMetrics(self.num_classes, top_k=self.config.eval.top_k)
        for batch in yt8m.iterate(self.dataset(eval_pattern, 512)):
            labels = batch["labels"].numpy()
            acc.update(np.broadcast_to(prior, labels.shape), labels)
        return {k: float(v) for k, v in acc.result().items()}

    def export(self, model, export_dir):
        return export.export_classifier(
            model, export_dir, features=self.features, max_frames=self.max_frames,
            num_classes=self.num_classes, top_k=self.config.export.top_k,
            l2_normalize=self.config.data.l2_normalize)

    def format_results(self, results, baseline=None):
        text = format_table(results)
        categories = format_category_table(results)
        if categories:
            text += "\n\nper top-level category (error rates, %):\n" + categories
        if baseline:
            text += "\n\nlabel-frequency baseline (every video scored by the training label frequencies):\n"
            text += format_table(baseline)
        return text

    def summary_line(self, metrics):
        keys = ("gap", "map", "hit_at_one", "perr")
        return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)

