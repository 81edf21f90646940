"""The audio–video correlation tower as a task of the one trainer.

Goyal et al. (Section 3, 4.1) train a separate tower that tells whether a
video track and an audio track belong together, then freeze it inside the
CM-G / CM-C classifiers. Pairs come from the frame-level YouTube-8M records:

- positive: the video and the audio of the same video;
- negative: the video of one video and the audio of another whose top-level
  categories differ. A video's top-level categories are the level-0
  ancestors of its labels, read from `taxonomy.json` beside the data; with
  no taxonomy any other video counts.

Negatives during training (`loss.negatives`, `loss.num_negatives`). Each
step draws `K = loss.num_negatives` distinct shifts `s_1..s_K` in
`[1, G-1]` (G the global batch; seeded by `config.seed` and the step), and
video `i` gets the candidates `audio_{(i - s_k) mod G}`; a candidate is valid
when the two videos share no top-level category. Of the valid candidates,
`"hardest"` keeps the one the tower currently scores highest (the paper's
hard negative mining, Section 6: the most convincing wrong pair), and
`"random"` keeps the first in the drawn order, a uniform draw among the
valid ones; with `K = 1` both are one random in-batch negative. A video
without a valid candidate has no negative that step. The candidates are
scored without gradient in inference mode, on each track's masked mean over
its valid frames (what the tower computes first), and the loss then runs the
full tower on the chosen pair.

Under several replicas the candidates come from the *global* batch: every
replica gathers the audio, its mask, the ids and the top-level categories
of all replicas (data only, no gradient crosses replicas) and draws the
same shifts, so a video's candidates and the mined negative are those of
one device with the same global batch, whatever the number of replicas.
Mining per replica would shrink the pool, and with it how hard the hardest
candidate is, as replicas are added.

Evaluation keeps the paper's measure, random negatives: the fixed shifts
`eval.negative_shifts` within each evaluation batch, every valid pair kept,
so the validation pairs are the same on every run and for towers trained
either way.

The loss is `weighted_binary_crossentropy` (negatives weighted
`loss.negative_weight`, 2 in the paper), summed per video over its positive
and (if found) negative pair and averaged over the global batch. Evaluation
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

from vt_keras import distributed
from vt_keras.data import yt8m
from vt_keras.data.taxonomy import load_taxonomy
from vt_keras.errors import ConfigError
from vt_keras.layers.correlation_tower import correlation_metrics, weighted_binary_crossentropy
from vt_keras.models.video_classifier import TOWER_LAYER, build_tower_model
from vt_keras.ops import masked_mean
from vt_keras.tasks.yt8m import TOWER_TASK, YT8MClassification
from vt_keras.train.checkpoints import track_variables
from vt_keras.train.task import TASKS

TASK_NAME = TOWER_TASK
NEGATIVES = ("random", "hardest")
_UNSET = object()


def top_level_matrix(taxonomy):
    """`[num_classes, num_roots]` float32: row c is the one-hot of class c's level-0 ancestor."""
    roots = sorted({taxonomy.root(c.id) for c in taxonomy.classes})
    column = {r: i for i, r in enumerate(roots)}
    matrix = np.zeros((taxonomy.num_classes, len(roots)), np.float32)
    for c in taxonomy.classes:
        matrix[c.id, column[taxonomy.root(c.id)]] = 1.0
    return matrix


def valid_negatives(ids, other_ids, top, other_top):
    """Which pairs (video of one row, audio of the matching row of `other_*`) may serve as negatives.

    A pair is valid when the two ids differ and, with a taxonomy, both videos
    have a known top-level category and they share none.

    Args:
        ids, other_ids: `[...]` video ids of the two sides (strings or int
            hashes), of one shape.
        top, other_top: float `[..., R]` multi-hot top-level categories, or
            None (no taxonomy: any other video is a negative).

    Returns:
        bool `[...]`.
    """
    valid = tf.not_equal(ids, other_ids)
    if top is not None:
        shared = tf.reduce_sum(top * other_top, axis=-1)
        known = tf.logical_and(tf.reduce_sum(top, -1) > 0, tf.reduce_sum(other_top, -1) > 0)
        valid = tf.logical_and(valid, tf.logical_and(known, shared == 0))
    return valid


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
    other_top = None if top is None else tf.roll(top, shift, axis=0)
    return valid_negatives(ids, tf.roll(ids, shift, axis=0), top, other_top)


def candidate_shifts(size, num, seed):
    """`min(num, size - 1)` distinct shifts in `[1, size - 1]`, in a random order.

    Video `i` of a batch of `size` gets the candidate negatives
    `(i - shift) mod size`: distinct shifts give distinct other videos.

    Args:
        size: int scalar (tensor), the batch the candidates come from.
        num: int, the candidates wanted per video (`loss.num_negatives`).
        seed: int `[2]`, a stateless seed (the run's seed and the step).

    Returns:
        int32 `[min(num, size - 1)]` (empty for a batch of one).

    Example:
        >>> candidate_shifts(64, 8, tf.constant([0, 17]))  # 8 of 1..63
    """
    others = tf.maximum(tf.cast(size, tf.int32) - 1, 0)
    order = tf.argsort(tf.random.stateless_uniform(tf.reshape(others, [1]), seed=seed))
    return tf.cast(order[:tf.minimum(int(num), others)], tf.int32) + 1


def select_negatives(scores, valid, negatives):
    """Per video, which candidate becomes its negative.

    Args:
        scores: float `[B, K]`, the tower's probability of each candidate
            pair (unused by "random").
        valid: bool `[B, K]`, which candidates may serve (`valid_negatives`).
        negatives: "hardest" (the valid candidate with the highest score;
            ties: the first) or "random" (the first valid candidate; the
            candidates come in a random order).

    Returns:
        `(index, found)`: int `[B]` into K, and bool `[B]`, False where a row
        has no valid candidate (its index is then meaningless).

    Example:
        >>> index, found = select_negatives(tf.constant([[.2, .9, .6], [.7, .1, .4]]),
        ...                                 tf.constant([[True, False, True], [False] * 3]), "hardest")
        >>> index.numpy()[0], found.numpy()  # .9 is not a valid negative
        (2, array([ True, False]))
    """
    found = tf.reduce_any(valid, axis=1)
    if negatives == "hardest":
        ranked = tf.where(valid, tf.cast(scores, tf.float32), -np.inf)
    else:
        ranked = tf.cast(valid, tf.float32)
    return tf.argmax(ranked, axis=1, output_type=tf.int32), found


def _id_hash(ids):
    # Ids cross replicas as int64 hashes: the all-gather takes float and int tensors only, no strings.
    return tf.strings.to_hash_bucket_fast(ids, 2**62)


@TASKS.register(TASK_NAME)
class CorrelationTowerTask(YT8MClassification):
    """Trains `CorrelationTower` on matching and mismatched video/audio pairs."""

    # Mining gathers, means and rolls the tracks outside the model: frames arrive as floats.
    input_dtype = "float32"

    def __init__(self, config):
        super().__init__(config)
        loss = config.loss
        if loss.negatives not in NEGATIVES:
            raise ConfigError(f"loss.negatives={loss.negatives!r} is unknown; expected one of {', '.join(NEGATIVES)}")
        if isinstance(loss.num_negatives, bool) or not isinstance(loss.num_negatives, int) or loss.num_negatives < 1:
            raise ConfigError(f"loss.num_negatives={loss.num_negatives!r}: expected an int >= 1 (candidate "
                              "negatives per video)")
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

    def top_level_hot(self, labels):
        """float `[B, R]` multi-hot top-level categories of `labels` `[B, C]`, or None (no taxonomy)."""
        matrix = self.top_levels()
        if matrix is None:
            return None
        return tf.cast(tf.matmul(tf.cast(labels, tf.float32), tf.constant(matrix)) > 0, tf.float32)

    def pairs(self, batch, shift):
        """Inputs of the positive and the negative pairs, and which negatives are valid."""
        video, audio, mask = batch[self.video_name], batch[self.audio_name], batch["mask"]
        positive = {self.video_name: video, self.audio_name: audio, "video_mask": mask, "audio_mask": mask}
        negative = dict(positive, **{self.audio_name: tf.roll(audio, shift, axis=0),
                                     "audio_mask": tf.roll(mask, shift, axis=0)})
        return positive, negative, negative_pairs(batch["id"], self.top_level_hot(batch["labels"]), shift)

    def mine_negatives(self, model, batch, ctx):
        """The negative of each video of this replica's batch (see the module docstring).

        Returns:
            dict: "audio" `[B, T, Da]` and "audio_mask" `[B, T]` of the chosen
            tracks, "found" bool `[B]`, "source" int32 `[B]` (the chosen
            audio's row in the global batch), and "candidates" int32 `[B, K]`,
            "valid" bool `[B, K]` and "scores" float32 `[B, K]` (zeros unless
            "hardest") of every candidate.
        """
        audio, mask = batch[self.audio_name], batch["mask"]
        local = tf.shape(mask)[0]
        all_audio, all_mask = ctx.gather(audio), ctx.gather(tf.cast(mask, tf.int32)) > 0
        all_ids = ctx.gather(_id_hash(batch["id"]))
        top = self.top_level_hot(batch["labels"])
        all_top = None if top is None else ctx.gather(top)
        size = tf.shape(all_mask)[0]
        seed = tf.stack([tf.cast(self.config.seed, tf.int64), tf.cast(ctx.step, tf.int64)])
        shifts = candidate_shifts(size, self.config.loss.num_negatives, seed)
        rows = distributed.replica_id() * local + tf.range(local)  # this replica's rows of the global batch
        candidates = tf.math.floormod(rows[:, None] - shifts[None, :], size)  # [B, K]
        valid = valid_negatives(_id_hash(batch["id"])[:, None], tf.gather(all_ids, candidates),
                                None if top is None else top[:, None, :],
                                None if top is None else tf.gather(all_top, candidates))
        num = tf.shape(candidates)[1]
        scores = tf.zeros(tf.shape(candidates), tf.float32)
        if self.config.loss.negatives == "hardest":
            # What the tower computes first is each track's masked mean: score the candidates on those.
            video_mean = masked_mean(batch[self.video_name], mask)
            audio_mean = masked_mean(all_audio, all_mask)
            out = model.get_layer(TOWER_LAYER)(
                (tf.repeat(video_mean, num, axis=0), tf.gather(audio_mean, tf.reshape(candidates, [-1]))),
                training=False)
            scores = tf.stop_gradient(tf.reshape(tf.cast(out["probability"], tf.float32), tf.shape(candidates)))
        index, found = select_negatives(scores, valid, self.config.loss.negatives)
        source = tf.gather(candidates, index, batch_dims=1)
        return {"audio": tf.gather(all_audio, source), "audio_mask": tf.gather(all_mask, source), "found": found,
                "source": source, "candidates": candidates, "valid": valid, "scores": scores}

    def loss_fn(self, model, batch, ctx):
        video, mask = batch[self.video_name], batch["mask"]
        mined = self.mine_negatives(model, batch, ctx)
        positive = {self.video_name: video, self.audio_name: batch[self.audio_name], "video_mask": mask,
                    "audio_mask": mask}
        negative = dict(positive, **{self.audio_name: mined["audio"], "audio_mask": mined["audio_mask"]})
        p_pos = model(positive, training=True)["probability"]
        p_neg = model(negative, training=True)["probability"]
        found = tf.cast(mined["found"], tf.float32)
        ones = tf.ones_like(p_pos)
        per_video = (weighted_binary_crossentropy(ones, p_pos, self.negative_weight)
                     + found * weighted_binary_crossentropy(0.0 * ones, p_neg, self.negative_weight))
        correct = tf.reduce_sum(tf.cast(p_pos >= 0.5, tf.float32)) + tf.reduce_sum(
            found * tf.cast(p_neg < 0.5, tf.float32))
        num_neg = tf.reduce_sum(found)
        accuracy = correct / (tf.cast(tf.shape(mask)[0], tf.float32) + num_neg)
        # How convincing the negatives trained on are: their mean probability.
        negative_score = tf.reduce_sum(found * p_neg) / tf.maximum(num_neg, 1.0)
        return ctx.mean_over_global_batch(per_video), {"pair_accuracy": accuracy, "negative_score": negative_score}

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
