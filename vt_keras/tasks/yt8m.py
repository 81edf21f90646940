"""YouTube-8M video classification: frame-level records in, class scores out."""
import numpy as np
import tensorflow as tf

from vt_keras.train.task import TASKS, Task

EPSILON = 1e-7


def multilabel_cross_entropy(labels, probs):
    """Per-example binary cross-entropy summed over classes (the starter code's loss), float32."""
    labels = tf.cast(labels, tf.float32)
    probs = tf.clip_by_value(tf.cast(probs, tf.float32), EPSILON, 1.0 - EPSILON)
    ce = -(labels * tf.math.log(probs) + (1.0 - labels) * tf.math.log(1.0 - probs))
    return tf.reduce_sum(ce, axis=-1)


def track_weights_by_path(model):
    """Makes every weight of `model` part of TensorFlow's checkpoint graph, keyed by its path.

    On the TensorFlow backend Keras 3 keeps sublayers held in Python lists
    (the tower's dense stacks, the Transformer's blocks, CrossModalNetVLAD's
    transforms) out of the object graph that `tf.train.Checkpoint` walks.
    Trainable ones still reach a training checkpoint through the optimizer,
    but a model restored without its optimizer (evaluate, export, plots) and
    the frozen correlation tower would silently keep their initial values.
    Weight paths depend only on the config (every sublayer with weights is
    named), so the same config restores them one to one.
    """
    holder = tf.Module(name="weights_by_path")
    holder.weights_by_path = {w.path: w for w in model.weights}
    model.checkpoint_weights = holder
    return model


def _cka_layer(model):
    from vt_keras.models.video_classifier import CKA_LAYER

    try:
        return model.get_layer(CKA_LAYER)
    except ValueError:
        return None


@TASKS.register("yt8m")
class YT8MClassification(Task):
    """Multi-label classification of frame-level YouTube-8M records."""

    @classmethod
    def prepare_config(cls, config, log=print):
        """Empty `data.train_pattern`: the embedded default data; `num_classes` 0: from its taxonomy."""
        from vt_keras.data import synthetic
        from vt_keras.train.task import fill_default_data

        d = config.data
        used_default = fill_default_data(d, synthetic.ensure_default_data, "embedded default data", log)
        if not d.eval_pattern:
            from vt_keras.errors import ConfigError

            raise ConfigError("data.eval_pattern is empty; expected the validation files' pattern")
        if int(d.num_classes) <= 0:
            from vt_keras.data.taxonomy import Taxonomy, find_taxonomy
            from vt_keras.errors import ConfigError

            path = find_taxonomy(d.train_pattern)
            if path is None:
                raise ConfigError(f"data.num_classes={d.num_classes} and no taxonomy.json beside "
                                  f"{d.train_pattern}; set --config.data.num_classes (3862 for YouTube-8M)")
            d.num_classes = Taxonomy.load(path).num_classes
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
        from vt_keras.models.video_classifier import build_video_classifier

        model = build_video_classifier(self.config.model, self.features, self.num_classes, self.max_frames)
        return track_weights_by_path(model)

    def warm_start(self, model):
        """Loads the trained correlation tower of `model.tower_workdir` into a cm_* classifier.

        The classifier's `correlation_tower` layer is frozen, so the loaded
        weights stay as trained. Other fusions load nothing.
        """
        if not str(self.config.model.get("fusion", "late")).startswith("cm_"):
            return
        from vt_keras.models.video_classifier import TOWER_LAYER
        from vt_keras.tasks.correlation_tower import load_tower_weights

        load_tower_weights(model.get_layer(TOWER_LAYER), self.config)

    def dataset(self, pattern, batch_size, training=False, input_context=None):
        from vt_keras.data import yt8m

        d = self.config.data
        return yt8m.frame_dataset(
            pattern, batch_size, features=self.features, max_frames=self.max_frames,
            num_classes=self.num_classes, shuffle=training, repeat=training, drop_remainder=training,
            input_context=input_context, seed=self.data_seed,
            skip_corrupt_records=d.get("skip_corrupt_records", False),
            l2_normalize=d.get("l2_normalize", False))

    def train_dataset(self, input_context):
        per_replica = input_context.get_per_replica_batch_size(int(self.config.train.batch_size))
        return self.dataset(self.config.data.train_pattern, per_replica, training=True,
                            input_context=input_context)

    def model_inputs(self, batch):
        inputs = {name: batch[name] for name, _ in self.features}
        inputs["mask"] = batch["mask"]
        return inputs

    def loss_fn(self, model, batch, ctx):
        probs = model(self.model_inputs(batch), training=True)
        per_example = multilabel_cross_entropy(batch["labels"], probs)
        metrics = {}
        alignment = _cka_layer(model)
        if alignment is not None:
            # The CKA of this step's global batch; its -λ·CKA is in model.losses.
            metrics["cka"] = tf.identity(alignment.last_cka)
        # main_weight is 0 during the CKA-only warm-up (train.cka_warmup_steps).
        return ctx.main_weight * ctx.mean_over_global_batch(per_example), metrics

    def predict(self, model, pattern, batch_size=None, with_ids=False):
        """Yields `(ids, probabilities, labels)` numpy batches over the files of `pattern`."""
        batch_size = batch_size or int(self.config.get("eval", {}).get("batch_size", 256))
        ds = self.dataset(pattern, batch_size, training=False)

        @tf.function
        def forward(batch):
            return model(self.model_inputs(batch), training=False)

        from vt_keras.data import yt8m

        for batch in yt8m.iterate(ds):
            probs = forward(batch)
            yield batch["id"].numpy(), np.asarray(probs, np.float32), batch["labels"].numpy()

    def taxonomy_levels(self, pattern):
        """Per-class level ids from `data.taxonomy` ('auto': taxonomy.json beside the files)."""
        from vt_keras.data.taxonomy import load_taxonomy

        taxonomy = load_taxonomy(self.config.data.get("taxonomy", "auto"), pattern, self.num_classes)
        return None if taxonomy is None else taxonomy.levels()

    def evaluate(self, model, pattern, **kwargs):
        from vt_keras.metrics.yt8m import YT8MMetrics

        top_k = int(self.config.get("eval", {}).get("top_k", 20))
        acc = YT8MMetrics(self.num_classes, top_k=top_k, taxonomy=self.taxonomy_levels(pattern))
        for _, probs, labels in self.predict(model, pattern):
            acc.update(probs, labels)
        return {k: float(v) for k, v in acc.result().items()}

    def baseline(self, train_pattern, eval_pattern):
        """Metrics of scoring every video with the training label frequencies."""
        from vt_keras.data import yt8m
        from vt_keras.metrics.yt8m import YT8MMetrics

        counts = np.zeros(self.num_classes, np.float64)
        total = 0
        for batch in yt8m.iterate(self.dataset(train_pattern, 512)):
            counts += batch["labels"].numpy().sum(0)
            total += batch["labels"].shape[0]
        prior = (counts / max(total, 1)).astype(np.float32)
        acc = YT8MMetrics(self.num_classes, top_k=int(self.config.get("eval", {}).get("top_k", 20)))
        for batch in yt8m.iterate(self.dataset(eval_pattern, 512)):
            labels = batch["labels"].numpy()
            acc.update(np.broadcast_to(prior, labels.shape), labels)
        return {k: float(v) for k, v in acc.result().items()}

    def export(self, model, export_dir):
        from vt_keras import export

        return export.export_classifier(
            model, export_dir, features=self.features, max_frames=self.max_frames,
            num_classes=self.num_classes, top_k=int(self.config.get("export", {}).get("top_k", 20)),
            l2_normalize=self.config.data.get("l2_normalize", False))

    def format_results(self, results, baseline=None):
        from vt_keras.metrics.yt8m import format_table

        text = format_table(results)
        if baseline:
            text += "\n\nlabel-frequency baseline (every video scored by the training label frequencies):\n"
            text += format_table(baseline)
        return text

    def summary_line(self, metrics):
        keys = ("gap", "map", "hit_at_one", "perr")
        return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)

