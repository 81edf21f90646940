"""Rated segments of the 2019 YouTube-8M files: the part of the YouTube-8M task that reads them.

Rated segments (`data.segment_labels=True`, docs/yt8m_segments.md): each
rated (segment, class) pair of the 2019 segment-rated files is one example
(`vt_keras.data.segments.segment_dataset`): the segment's 5 frames, padded
and masked to `data.max_frames` (video-level models: their mean), its
rating as the class's label, and label weights of 1 at that class and 0
elsewhere. The loss counts the weighted classes only (unrated classes add
nothing), the evaluation runs `YT8MMetrics` with the same weights over the
rated pairs of the evaluation files (its MAP is the challenge's MAP over
every rated segment), and the default data is the embedded data's rated
validation split for training and its rated test split for evaluation.
`model.init_workdir` starts such a run from the weights of a workdir
trained at video or frame level (`warm_start`).
"""
import os

import numpy as np
import tensorflow as tf

from vt_keras.data import segments, yt8m
from vt_keras.errors import ConfigError
from vt_keras.metrics.yt8m_accumulator import YT8MMetrics


def fill_default_segment_data(data_cfg, ensure_data, log=print):
    """An empty `data.train_pattern` under `data.segment_labels`: the embedded data's rated splits.

    Training reads the rated validation split and evaluation the rated test
    split, as in the 2019 challenge (fine-tune on the validation ratings,
    rank the test segments); the embedded data's test ratings are public.

    Returns:
        True when the embedded data was substituted.
    """
    if data_cfg.train_pattern:
        return False
    log("embedded default data (rated segments): generating it once into the cache if missing ...")
    root = ensure_data()
    log(f"embedded default data (rated segments): {root}")
    data_cfg.train_pattern = os.path.join(root, "validate-*.tfrecord")
    data_cfg.eval_pattern = data_cfg.eval_pattern or os.path.join(root, "test-*.tfrecord")
    if not data_cfg.test_pattern:
        data_cfg.test_pattern = os.path.join(root, "test-*.tfrecord")
    return True


class RatedSegments:
    """What `YT8MClassification` (and its video-level subclass) do under `data.segment_labels`.

    A mixin: it reads `config`, `features`, `num_classes`, `max_frames`,
    `data_seed`, `taxonomy` and `model_inputs` of the task it is mixed into.
    """

    @property
    def segment_labels(self):
        """Whether examples are rated (segment, class) pairs (see the module docstring)."""
        return bool(self.config.data.segment_labels)

    # Video-level models read each segment as the mean of its frames (`mean_<feature>`).
    POOLED_SEGMENTS = False

    @property
    def segment_features(self):
        """The frame features the rated segments are read from."""
        return self.features

    def rated_segment_dataset(self, pattern, batch_size, training=False, input_context=None,
                              skip_batches=0):
        """Rated (segment, class) pairs of `pattern` as model inputs, `labels` and `label_weights`.

        Frame-level models get the segment's frames padded (and masked) to
        `data.max_frames`, as the export's `predict_features` pads them when
        `bin/predict --segments` scores segments.
        """
        d = self.config.data
        ds = segments.segment_dataset(
            pattern, batch_size, features=self.segment_features, num_classes=self.num_classes,
            max_frames=self.max_frames, pooled=self.POOLED_SEGMENTS, l2_normalize=d.l2_normalize,
            shuffle=training, repeat=training, drop_remainder=training, input_context=input_context,
            seed=self.data_seed, skip_corrupt_records=d.skip_corrupt_records, skip_batches=skip_batches)
        if self.POOLED_SEGMENTS:
            return ds
        if self.max_frames < segments.SEGMENT_FRAMES:
            raise ConfigError(f"data.max_frames={self.max_frames} is shorter than a segment "
                              f"({segments.SEGMENT_FRAMES} frames); expected >= {segments.SEGMENT_FRAMES}")
        names = [name for name, _ in self.features]

        def pad(batch):
            extra = self.max_frames - segments.SEGMENT_FRAMES
            batch = dict(batch)
            for name in names:
                batch[name] = tf.pad(batch[name], [[0, 0], [0, extra], [0, 0]])
            batch["mask"] = tf.pad(batch["mask"], [[0, 0], [0, extra]])
            return batch

        return ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE)

    def evaluate_rated_segments(self, model, pattern):
        """`YT8MMetrics` over the rated (segment, class) pairs of `pattern`, weighted by their label weights.

        Each pair is one row with one weighted class, so `map` is the 2019
        challenge's MAP over every rated segment of the files (ties aside)
        and `num_videos` counts the pairs; a rating above 0.5 is a positive.
        """
        taxonomy = self.taxonomy(pattern)
        acc = YT8MMetrics(self.num_classes, top_k=self.config.eval.top_k,
                          taxonomy=None if taxonomy is None else taxonomy.levels())
        for _, probs, labels, weights in self.predict_rated_segments(model, pattern):
            acc.update(probs, labels > 0.5, weights)
        results = acc.result()
        # Ratings are usually of one level (the challenge's 1,000 classes); levels without a rated pair
        # have no metrics (NaN) and are left out.
        empty = {k.split("/")[0] for k, v in results.items() if k.endswith("/num_videos") and v == 0}
        return {k: float(v) for k, v in results.items() if k.split("/")[0] not in empty}

    def predict_rated_segments(self, model, pattern, batch_size=None):
        """Yields `(segment ids, probabilities, labels, label_weights)` numpy batches of the rated pairs."""
        ds = self.rated_segment_dataset(pattern, batch_size or self.config.eval.batch_size)

        @tf.function
        def forward(batch):
            return model(self.model_inputs(batch), training=False)

        for batch in yt8m.iterate(ds):
            ids = [segments.segment_id(v, s) for v, s in zip(batch["id"].numpy(), batch["segment_start"].numpy())]
            yield (ids, np.asarray(forward(batch), np.float32), batch["labels"].numpy(),
                   batch["label_weights"].numpy())

    def _rated_segments_baseline(self, train_pattern, eval_pattern):
        positives, rated = np.zeros(self.num_classes), np.zeros(self.num_classes)
        for batch in yt8m.iterate(self.rated_segment_dataset(train_pattern, 512)):
            positives += (batch["labels"].numpy() > 0.5).sum(0)
            rated += batch["label_weights"].numpy().sum(0)
        prior = (positives / np.maximum(rated, 1)).astype(np.float32)
        acc = YT8MMetrics(self.num_classes, top_k=self.config.eval.top_k)
        for batch in yt8m.iterate(self.rated_segment_dataset(eval_pattern, 512)):
            labels = batch["labels"].numpy()
            acc.update(np.broadcast_to(prior, labels.shape), labels > 0.5, batch["label_weights"].numpy())
        return {k: float(v) for k, v in acc.result().items()}
