"""The audio–video correlation tower as a task of the one trainer.

Goyal et al. (Section 3, 4.1) train a separate tower that tells whether a
video track and an audio track belong together, then freeze it inside the
CM-G / CM-C classifiers. Pairs come from the frame-level YouTube-8M records:

- positive: the video and the audio of the same video;
- negative: the video of one video and the audio of another whose top-level
  categories differ. Negatives are built in the graph from each batch: the
  audio (and its mask) is rolled by `s` positions along the batch, and pair
  `(video_i, audio_{i-s})` is kept only when the two videos share no
  top-level category. A video's top-level categories are the level-0
  ancestors of its labels, read from `taxonomy.json` beside the data; with
  no taxonomy any other video counts. Training draws `s` per step (seeded by
  the step), evaluation uses the fixed shifts `eval.negative_shifts`, so the
  validation pairs are the same on every run.

The loss is `weighted_binary_crossentropy` (negatives weighted
`loss.negative_weight`, 2 in the paper), summed per video over its positive
and (if kept) negative pair and averaged over the global batch. Evaluation
reports accuracy, false-positive and false-negative rates (the paper: 92%,
9.6%, 4.1% on YouTube-8M) and, where a synthetic `manifest.json` lies beside
the evaluation files, how many of the videos whose audio was swapped in from
another category the tower calls uncorrelated.
"""
import json
import os

import keras
import numpy as np
import tensorflow as tf

from vt_keras.data import yt8m
from vt_keras.data.taxonomy import load_taxonomy
from vt_keras.layers.correlation_tower import correlation_metrics, weighted_binary_crossentropy
from vt_keras.models.video_classifier import build_tower_model
from vt_keras.tasks.yt8m import TOWER_TASK, YT8MClassification
from vt_keras.train.checkpoints import track_variables
from vt_keras.train.task import TASKS

TASK_NAME = TOWER_TASK
_UNSET = object()


def top_level_matrix(taxonomy):
    """`[num_classes, num_roots]` float32: row c is the one-hot of class c's level-0 ancestor."""
    roots = sorted({taxonomy.root(c.id) for c in taxonomy.classes})
    column = {r: i for i, r in enumerate(roots)}
    matrix = np.zeros((taxonomy.num_classes, len(roots)), np.float32)
    for c in taxonomy.classes:
        matrix[c.id, column[taxonomy.root(c.id)]] = 1.0
    return matrix


def negative_pairs(ids, top, shift):
    """Which pairs `(video_i, audio_{i-shift})` of a batch are valid negatives.

    Args:
        ids: string `[B]` video ids.
        top: float `[B, R]` multi-hot top-level categories, or None (no
            taxonomy: any other video is a negative).
        shift: int scalar, the roll of the audio along the batch.

    Returns:
        bool `[B]`.
    """
    valid = tf.not_equal(ids, tf.roll(ids, shift, axis=0))
    if top is not None:
        other = tf.roll(top, shift, axis=0)
        shared = tf.reduce_sum(top * other, axis=-1)
        known = tf.logical_and(tf.reduce_sum(top, -1) > 0, tf.reduce_sum(other, -1) > 0)
        valid = tf.logical_and(valid, tf.logical_and(known, shared == 0))
    return valid


@TASKS.register(TASK_NAME)
class CorrelationTowerTask(YT8MClassification):
    """Trains `CorrelationTower` on matching and mismatched video/audio pairs."""

    def __init__(self, config):
        super().__init__(config)
        self._top_matrix = _UNSET
        self._forward = None  # (model, its evaluation tf.function), see _eval_forward

    @property
    def video_name(self):
        return self.features[0][0]

    @property
    def audio_name(self):
        return self.features[1][0]

    @property
    def negative_weight(self):
        return self.config.loss.negative_weight

    def warm_start(self, model):
        """Nothing to load: the tower is what the cm_* classifiers warm-start from."""
        del model

    def build_model(self):
        self.top_levels()  # read the taxonomy here, not while a step function is traced
        return track_variables(build_tower_model(self.config.model, self.features, self.max_frames))

    def top_levels(self):
        """The class → top-level matrix from `data.taxonomy` ("auto": beside the training files), or None."""
        if self._top_matrix is _UNSET:
            taxonomy = load_taxonomy(self.config.data.taxonomy, self.config.data.train_pattern, self.num_classes)
            self._top_matrix = None if taxonomy is None else top_level_matrix(taxonomy)
        return self._top_matrix

    def pairs(self, batch, shift):
        """Inputs of the positive and the negative pairs, and which negatives are valid."""
        inputs = self.model_inputs(batch)  # frames dequantized on the device
        video, audio, mask = inputs[self.video_name], inputs[self.audio_name], batch["mask"]
        positive = {self.video_name: video, self.audio_name: audio, "video_mask": mask, "audio_mask": mask}
        negative = dict(positive, **{self.audio_name: tf.roll(audio, shift, axis=0),
                                     "audio_mask": tf.roll(mask, shift, axis=0)})
        matrix = self.top_levels()
        top = None
        if matrix is not None:
            top = tf.cast(tf.matmul(batch["labels"], tf.constant(matrix)) > 0, tf.float32)
        return positive, negative, negative_pairs(batch["id"], top, shift)

    def loss_fn(self, model, batch, ctx):
        size = tf.shape(batch["mask"])[0]
        # A shift in [1, B-1] drawn from the step: reproducible, new pairs each step.
        seed = tf.stack([tf.cast(self.config.seed, tf.int64), tf.cast(ctx.step, tf.int64)])
        shift = tf.random.stateless_uniform([], seed=seed, minval=1, maxval=tf.maximum(size, 2), dtype=tf.int32)
        positive, negative, valid = self.pairs(batch, shift)
        p_pos = model(positive, training=True)["probability"]
        p_neg = model(negative, training=True)["probability"]
        valid_f = tf.cast(valid, tf.float32)
        ones = tf.ones_like(p_pos)
        per_video = (weighted_binary_crossentropy(ones, p_pos, self.negative_weight)
                     + valid_f * weighted_binary_crossentropy(0.0 * ones, p_neg, self.negative_weight))
        correct = tf.reduce_sum(tf.cast(p_pos >= 0.5, tf.float32)) + tf.reduce_sum(
            valid_f * tf.cast(p_neg < 0.5, tf.float32))
        accuracy = correct / (tf.cast(size, tf.float32) + tf.reduce_sum(valid_f))
        return ctx.mean_over_global_batch(per_video), {"pair_accuracy": accuracy}

    def _eval_forward(self, model):
        """One `tf.function` per model (periodic evaluations reuse its trace)."""
        if self._forward is not None and self._forward[0] is model:
            return self._forward[1]
        shifts = [int(s) for s in self.config.eval.negative_shifts]
        self.top_levels()

        @tf.function(reduce_retracing=True)
        def forward(batch):
            size = tf.shape(batch["mask"])[0]
            positive, _, _ = self.pairs(batch, 0)
            p_pos = model(positive, training=False)["probability"]
            negatives = []
            for s in shifts:
                _, negative, valid = self.pairs(batch, tf.math.floormod(s, tf.maximum(size, 1)))
                negatives.append(tf.boolean_mask(model(negative, training=False)["probability"], valid))
            return p_pos, tf.concat(negatives, axis=0)

        self._forward = (model, forward)
        return forward

    def score_pairs(self, model, pattern):
        """Deterministic validation pairs: `(ids, p_positive, p_negative)` numpy arrays."""
        batch_size = self.config.eval.batch_size
        forward = self._eval_forward(model)
        ids, pos, neg = [], [], []
        for batch in yt8m.iterate(self.dataset(pattern, batch_size, training=False)):
            p_pos, p_neg = forward(batch)
            ids.extend(x.decode() for x in batch["id"].numpy())
            pos.append(p_pos.numpy())
            neg.append(p_neg.numpy())
        return np.array(ids), np.concatenate(pos), np.concatenate(neg)

    def evaluate(self, model, pattern, **kwargs):
        ids, pos, neg = self.score_pairs(model, pattern)
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        results = correlation_metrics(y, np.concatenate([pos, neg]))
        results.update(num_positive_pairs=float(len(pos)), num_negative_pairs=float(len(neg)))
        flagged = uncorrelated_flags(pattern)
        if flagged is not None:
            swapped = np.array([flagged.get(i, False) for i in ids])
            results["uncorrelated_videos"] = float(swapped.sum())
            # The honest extra metric: the real pairs the data generator made uncorrelated.
            results["uncorrelated_detection_rate"] = (
                float(np.mean(pos[swapped] < 0.5)) if swapped.any() else float("nan"))
            clean = ~swapped
            results["clean_false_negative_rate"] = float(np.mean(pos[clean] < 0.5)) if clean.any() else float("nan")
        return results

    def export(self, model, export_dir):
        """SavedModel: `serving_default(example_bytes)` → `video_id`, `probability` of its own tracks."""
        names = (self.video_name, self.audio_name)
        archive = keras.export.ExportArchive()
        archive.track(model)

        def serving_default(example_bytes):
            parsed = yt8m.parse_frame_example(example_bytes, features=self.features, max_frames=self.max_frames,
                                              num_classes=self.num_classes, labels_key=None, count_problems=False)
            inputs = {n: parsed[n] for n in names}
            inputs.update(video_mask=parsed["mask"], audio_mask=parsed["mask"])
            out = model(inputs, training=False)
            return {"video_id": parsed["id"], "probability": tf.cast(out["probability"], tf.float32)}

        archive.add_endpoint("serving_default", serving_default,
                             input_signature=[tf.TensorSpec([None], tf.string, name="example_bytes")])
        archive.write_out(export_dir, verbose=False)
        return export_dir

    def format_results(self, results, baseline=None):
        del baseline
        rows = [("accuracy", "accuracy"), ("false-positive rate", "false_positive_rate"),
                ("false-negative rate", "false_negative_rate"),
                ("uncorrelated-audio videos detected", "uncorrelated_detection_rate"),
                ("false-negative rate, clean videos", "clean_false_negative_rate")]
        lines = [f"correlation tower: {int(results.get('num_positive_pairs', 0))} positive, "
                 f"{int(results.get('num_negative_pairs', 0))} negative evaluation pairs"]
        lines += [f"  {label:<36} {100 * results[key]:6.2f}%" for label, key in rows if key in results]
        if "uncorrelated_videos" in results:
            lines.append(f"  ({int(results['uncorrelated_videos'])} videos with swapped-in audio in the manifest)")
        return "\n".join(lines)

    def summary_line(self, metrics):
        keys = (("accuracy", "acc"), ("false_positive_rate", "fpr"), ("false_negative_rate", "fnr"),
                ("uncorrelated_detection_rate", "detected"))
        return " ".join(f"{short}={metrics[k]:.4f}" for k, short in keys if k in metrics)

    def baseline(self, train_pattern, eval_pattern):
        """None: a label-frequency baseline means nothing for pairs (bin/train then prints none)."""
        del train_pattern, eval_pattern


def uncorrelated_flags(pattern):
    """`{video id: uncorrelated_audio}` from a synthetic manifest.json beside the files, or None."""
    path = os.path.join(os.path.dirname(pattern.split(",")[0]), "manifest.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        manifest = json.load(f)
    videos = manifest.get("videos") if isinstance(manifest, dict) else None
    if not videos or not all("uncorrelated_audio" in v for v in videos):
        return None
    return {v["id"]: bool(v["uncorrelated_audio"]) for v in videos}
