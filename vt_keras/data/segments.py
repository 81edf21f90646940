"""YouTube-8M 2019 segment ratings: rated segments as training examples, every segment for inference.

A rated record is an ordinary frame-level `SequenceExample` whose context
also has `segment_labels` (class ids), `segment_start_times` (the first
frame of each rated segment, in seconds = frame index) and `segment_scores`
(1.0: the class is present in that segment, 0.0: it is not), one entry per
rated (segment, class) pair. A segment is `SEGMENT_FRAMES` = 5 consecutive
frames, named `videoid:start` in the challenge's submissions.

- `segment_dataset`: one example per rated (segment, class) pair, the
  starter code's way to fine-tune on segments: the segment's 5 frames, the
  label vector (the pair's score at its class, 0 elsewhere) and a label
  weight vector (1 at its class, 0 elsewhere) so that unrated classes add
  nothing to a loss that honours the weights.
- `video_segments`: every non-overlapping 5-frame segment of parsed videos
  (the partial tail dropped), what `bin/predict --segments` scores.
- `read_segment_ratings`: the ratings of a set of files, `{class: {segment
  id: score}}`, for `vt_keras.metrics.segments.segment_map`.
"""
import collections

import tensorflow as tf

from vt_keras.data.checks import gate, iterate
from vt_keras.data.pipeline import record_dataset
from vt_keras.data.yt8m import FRAME_FEATURES, l2_normalize_concat, parse_frame_example
from vt_keras.data.yt8m_fields import (SEGMENT_FRAMES, context_spec, normalize_features, pick_ids, segment_ratings,
                                       where)
from vt_keras.errors import ConfigError

__all__ = ["SEGMENT_FRAMES", "read_segment_ratings", "segment_dataset", "segment_id", "video_segments"]


def segment_id(video_id, start):
    """The challenge's name of a segment: `videoid:start` (start in seconds = frame index)."""
    if isinstance(video_id, bytes):
        video_id = video_id.decode("utf-8")
    return f"{video_id}:{int(start)}"


def _segment_frames(values, rows, starts, segment_frames):
    """Frames `[P, segment_frames, dim]` of video `rows[p]` from frame `starts[p]`; zeros past the end."""
    values = tf.pad(values, [[0, 0], [0, segment_frames], [0, 0]])  # a segment may run past max_frames
    offsets = tf.range(segment_frames, dtype=tf.int32)
    index = tf.stack([tf.broadcast_to(rows[:, None], [tf.size(rows), segment_frames]),
                      starts[:, None] + offsets[None, :]], axis=-1)
    return tf.gather_nd(values, index)


def rated_pairs(batch, features, num_classes, segment_frames=SEGMENT_FRAMES, pooled=False, l2_normalize=False):
    """One example per rated (segment, class) pair of a parsed batch (see `segment_dataset`).

    Args:
        batch: `parse_frame_example(..., segments=True)` output (frames not
            L2-normalised: pass `l2_normalize` here).
        features: `(name, dim)` pairs of the frames.
        num_classes: length of the label vectors.
        segment_frames: frames per segment.
        pooled: give each feature as the mean of the segment's frames under
            `mean_<name>` (the video-level records' naming) instead of frames.
        l2_normalize: the starter code's input normalisation: of each frame's
            concatenated features, or (pooled) of the concatenated means.

    Returns:
        A dict of `[P, ...]` tensors, P the number of rated pairs in the batch.
    """
    labels, starts, scores = (batch[k] for k in ("segment_labels", "segment_start_times", "segment_scores"))
    rows = tf.cast(labels.value_rowids(), tf.int32)
    classes, starts, scores = labels.flat_values, starts.flat_values, scores.flat_values
    valid = tf.range(segment_frames)[None, :] + starts[:, None] < tf.gather(batch["num_frames"], rows)[:, None]
    values = [_segment_frames(batch[name], rows, starts, segment_frames) for name, _ in features]
    out = {}
    if pooled:
        count = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32), axis=1, keepdims=True), 1.0)
        values = [tf.reduce_sum(v, axis=1) / count for v in values]  # frames past the end are zeros
        names = [f"mean_{name}" for name, _ in features]
    else:
        out["mask"] = valid
        out["num_frames"] = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        names = [name for name, _ in features]
    if l2_normalize:
        values = l2_normalize_concat(values)
    out.update(zip(names, values))
    hot = tf.one_hot(classes, num_classes, dtype=tf.float32)
    out.update({"id": tf.gather(batch["id"], rows), "segment_start": starts, "segment_class": classes,
                "labels": hot * scores[:, None], "label_weights": hot})
    return out


def segment_dataset(file_pattern, batch_size, *, features=FRAME_FEATURES, num_classes=3862, max_frames=300,
                    segment_frames=SEGMENT_FRAMES, pooled=False, l2_normalize=False, shuffle=False, repeat=False,
                    drop_remainder=False, input_context=None, seed=None, skip_corrupt_records=False, id_key="auto",
                    records_per_parse=32, shuffle_buffer_size=1024, skip_batches=0, deterministic=True):
    """A dataset of rated segments: one example per rated (segment, class) pair.

    Videos without ratings contribute nothing. Records are read and checked
    by the frame-level reader (`parse_frame_example(segments=True)`: equal
    lengths of the three lists, start times inside the frames read, class ids
    below `num_classes`), `records_per_parse` at a time, then the pairs are
    shuffled (when `shuffle`) and batched.

    Args:
        file_pattern, input_context, seed, skip_corrupt_records, id_key,
            deterministic: as in `frame_dataset`.
        batch_size: rated pairs per batch.
        features, num_classes, max_frames: as in `frame_dataset`.
        segment_frames: frames per segment (5 in the 2019 data).
        pooled, l2_normalize: see `rated_pairs` (`pooled=True` for
            video-level models, which read `mean_rgb`, `mean_audio`).
        shuffle, repeat, drop_remainder: over files and pairs.
        records_per_parse: videos parsed at a time.
        shuffle_buffer_size: pairs in the shuffle buffer.
        skip_batches: batches of pairs to skip (the pairs' count per video is
            known only after parsing, so skipped batches are parsed).

    Returns:
        A dataset of dicts: per feature `[B, segment_frames, dim]` frames (or
        `mean_<name>` `[B, dim]` when `pooled`), `mask` bool `[B,
        segment_frames]` and `num_frames` int32 `[B]` (frames), `labels`
        float32 `[B, num_classes]` (the pair's score at its class),
        `label_weights` float32 `[B, num_classes]` (1 at its class),
        `segment_class` int32 `[B]`, `segment_start` int32 `[B]`, `id` string `[B]`.

    Example:
        >>> ds = segment_dataset("yt8m/frame/validate*.tfrecord", 128, num_classes=3862, pooled=True)
        >>> per_example = keras.ops.sum(batch["label_weights"] * cross_entropy, axis=-1)
    """
    features = normalize_features(features)
    segment_frames = int(segment_frames)
    if segment_frames < 1:
        raise ConfigError(f"segment_frames: expected >= 1, found {segment_frames}")

    def parse(records, filenames):
        batch = parse_frame_example(records, features, max_frames, num_classes, id_key, None, not pooled and
                                    l2_normalize, filenames, segments=True)
        return rated_pairs(batch, features, num_classes, segment_frames, pooled, pooled and l2_normalize)

    ds = record_dataset(file_pattern, records_per_parse, parse, shuffle=shuffle, repeat=repeat,
                        input_context=input_context, seed=seed, skip_corrupt_records=skip_corrupt_records,
                        deterministic=deterministic)
    ds = ds.unbatch()
    if shuffle and shuffle_buffer_size > 1:
        ds = ds.shuffle(int(shuffle_buffer_size), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if skip_batches:
        ds = ds.skip(int(skip_batches))
    return ds.prefetch(tf.data.AUTOTUNE)


def video_segments(batch, features, segment_frames=SEGMENT_FRAMES, pooled=False):
    """Every non-overlapping segment of every video of a parsed batch; a partial tail is dropped.

    A video of 23 frames has segments starting at 0, 5, 10 and 15.

    Args:
        batch: `parse_frame_example` output (`id`, `num_frames`, the features).
        features: `(name, dim)` pairs.
        segment_frames: frames per segment.
        pooled: the mean of each segment's frames `[S, dim]` instead of the
            frames `[S, segment_frames, dim]` (for video-level models).

    Returns:
        `(ids, starts, values)`: string `[S]` video ids, int32 `[S]` start
        frames and the list of per-feature segment tensors, in video order.

    Example:
        >>> ids, starts, (rgb, audio) = video_segments(parse_frame_example(records), FRAME_FEATURES)
    """
    per_video = tf.cast(batch["num_frames"], tf.int32) // segment_frames
    rows = tf.repeat(tf.range(tf.size(per_video)), per_video)
    starts = (tf.range(tf.size(rows)) - tf.gather(tf.cumsum(per_video, exclusive=True), rows)) * segment_frames
    values = [_segment_frames(batch[name], rows, starts, segment_frames) for name, _ in normalize_features(features)]
    if pooled:
        values = [tf.reduce_mean(v, axis=1) for v in values]
    return tf.gather(batch["id"], rows), starts, values


def read_segment_ratings(file_pattern, num_classes=None, frames_key="rgb", id_key="auto",
                         skip_corrupt_records=False):
    """The segment ratings of every record of `file_pattern`.

    Args:
        file_pattern: frame-level files (a glob, several separated by commas).
        num_classes: class ids must be below it (None: any id >= 0).
        frames_key: the feature list whose length is the video's frame count
            (start times are checked against it).
        id_key, skip_corrupt_records: as in `frame_dataset`.

    Returns:
        `{class_id: {segment_id: score}}` over all rated pairs, with segment
        ids `videoid:start`; classes never rated are absent.

    Example:
        >>> ratings = read_segment_ratings("yt8m/frame/validate*.tfrecord", num_classes=3862)
    """
    spec = context_spec(id_key, None, segments=True)
    sequence = {frames_key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)}

    def parse(records, filenames):
        context, _, lengths = tf.io.parse_sequence_example(records, context_features=spec,
                                                           sequence_features=sequence)
        ids, check = pick_ids(context, id_key, filenames)
        frames = tf.cast(lengths[frames_key], tf.int32)
        checks, out = segment_ratings(context, frames, num_classes, None, where(ids, filenames))
        with tf.control_dependencies([gate([check] + checks)]):
            return dict({k: v.with_flat_values(tf.identity(v.flat_values)) for k, v in out.items()},
                        id=tf.identity(ids))

    ratings = collections.defaultdict(dict)
    for batch in iterate(record_dataset(file_pattern, 256, parse, skip_corrupt_records=skip_corrupt_records)):
        labels, starts, scores = (batch[k] for k in ("segment_labels", "segment_start_times", "segment_scores"))
        for vid, row_labels, row_starts, row_scores in zip(batch["id"].numpy(), labels.to_list(),
                                                           starts.to_list(), scores.to_list()):
            vid = vid.decode("utf-8")
            for c, start, score in zip(row_labels, row_starts, row_scores):
                ratings[int(c)][f"{vid}:{int(start)}"] = float(score)
    return dict(ratings)
