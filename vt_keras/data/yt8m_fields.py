"""Context fields of YouTube-8M records, shared by the frame- and video-level parsers.

- The video id. The 2017 release names it `video_id`, the 2018+ releases
  `id` (a rename that broke readers across the ecosystem). `id_key="auto"`
  takes, per record, whichever of the two exists; an explicit key reads only
  that one. A record without its id is an error.
- The labels: class ids (int64 list), checked against `num_classes` and
  returned multi-hot. `labels_key=None` reads no labels at all (serving).
- The 2019 segment ratings: `segment_labels` (class ids),
  `segment_start_times` (first frame of each rated 5-frame segment) and
  `segment_scores` (1.0 present, 0.0 absent), one entry per rated
  (segment, class) pair; videos without them are unrated.

Every check is in the graph (see `vt_keras.data.checks`): a failure is one
line naming the file, the record, the key, what was expected and what was found.
"""
import tensorflow as tf

from vt_keras.data.checks import RowCheck, assert_rows
from vt_keras.errors import ConfigError

ID_KEYS = ("id", "video_id")  # 2018+ releases first, then the 2017 release
SEGMENT_KEYS = ("segment_labels", "segment_start_times", "segment_scores")
SEGMENT_FRAMES = 5


def normalize_features(features):
    """`(name, dim)` pairs (a dict or a sequence) as a tuple of `(str, int)`; ConfigError otherwise."""
    items = list(features.items() if isinstance(features, dict) else features)
    if not items:
        raise ConfigError("features: expected at least one (name, dim) pair, found none")
    out = []
    for item in items:
        try:
            name, dim = item
            ok = isinstance(name, str) and int(dim) == dim and dim > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"features: expected (name, positive dim) pairs, found {item!r}")
        out.append((name, int(dim)))
    return tuple(out)


def id_keys(id_key):
    """The context keys to look for the id under: `("id", "video_id")` for "auto", else `(id_key,)`."""
    if id_key == "auto":
        return ID_KEYS
    if not isinstance(id_key, str) or not id_key:
        raise ConfigError(f"id_key: expected 'auto' or a context key such as 'id' or 'video_id', found {id_key!r}")
    return (id_key,)


def context_spec(id_key, labels_key, segments=False):
    """The parse spec of the context: the id key(s), the labels (unless None), the segment keys."""
    spec = {key: tf.io.RaggedFeature(tf.string) for key in id_keys(id_key)}
    if labels_key is not None:
        spec[labels_key] = tf.io.RaggedFeature(tf.int64)
    if segments:
        spec.update({"segment_labels": tf.io.RaggedFeature(tf.int64),
                     "segment_start_times": tf.io.RaggedFeature(tf.int64),
                     "segment_scores": tf.io.RaggedFeature(tf.float32)})
    return spec


def where(ids, filenames):
    """`file 'f', record 'id'` per record (string `[B]`), the prefix of every error message."""
    named = tf.strings.join(["record '", ids, "'"])
    named = tf.where(tf.strings.length(ids) > 0, named, "a record without an id")
    if filenames is not None:
        named = tf.strings.join(["file '", filenames, "', ", named])
    return named


def pick_ids(context, id_key, filenames):
    """The id of each record (string `[B]`) and the check (a deferred `RowCheck`) that every record has exactly one."""
    keys = id_keys(id_key)
    counts = [context[k].row_lengths() for k in keys]
    firsts = [context[k].to_tensor("", shape=[None, 1])[:, 0] for k in keys]
    ids, count = firsts[-1], counts[-1]
    for key_ids, key_count in zip(firsts[-2::-1], counts[-2::-1]):
        ids = tf.where(key_count > 0, key_ids, ids)
        count = tf.where(key_count > 0, key_count, count)
    if len(keys) > 1:
        missing = f"no context key {' or '.join(repr(k) for k in keys)}; expected the video id under 'id' " \
                  "(2018+ releases) or 'video_id' (2017 release)"
    else:
        missing = f"no context key '{keys[0]}' (id_key); expected the video id under it"

    def detail(i):
        many = tf.strings.join(["the id key holds ", tf.as_string(count[i]), " values; expected 1"])
        return tf.where(count[i] == 0, missing, many)

    return ids, assert_rows(tf.equal(count, 1), where(ids, filenames), detail)


def ragged_values_check(ragged, bad, where_, detail_fn):
    """A `RowCheck` that no value of `ragged` `[B, None]` is `bad` (bool, like its flat values).

    The graph holds one flag for the batch; the per-row test that names the
    first bad row is built only on failure (see `vt_keras.data.checks.gate`).
    """

    def failed():
        ok = tf.logical_not(tf.reduce_any(ragged.with_flat_values(bad), axis=1))
        return assert_rows(ok, where_, detail_fn).on_failure()

    return RowCheck(tf.logical_not(tf.reduce_any(bad)), failed)


def multi_hot_labels(labels, num_classes, where_):
    """Checks ragged label ids `[B, None]` against `num_classes`; returns (check, multi-hot float32 `[B, C]`).

    The check is a deferred `RowCheck` (`ragged_values_check`). The
    multi-hot rows do not wait for it (an out-of-range id scatters
    nothing), so they must be used under the gate.
    """
    values = labels.flat_values
    bad = tf.logical_or(values < 0, values >= num_classes)
    # The first bad value in row-major order is in the first bad row.
    check = ragged_values_check(labels, bad, where_, lambda i: tf.strings.join([
        "label ", tf.as_string(tf.boolean_mask(values, bad)[0]),
        f" out of range; expected 0 <= label < num_classes={num_classes}"]))
    # Dense ids padded with num_classes (never a class), then every valid (row, id) pair scattered.
    dense = labels.to_tensor(num_classes)
    pairs = tf.where(tf.logical_and(dense >= 0, dense < num_classes))
    batch = tf.shape(dense, out_type=tf.int64)[0]
    zeros = tf.zeros(tf.stack([batch, tf.constant(num_classes, tf.int64)]), tf.float32)
    hot = tf.tensor_scatter_nd_max(zeros, tf.stack([pairs[:, 0], tf.gather_nd(dense, pairs)], axis=1),
                                   tf.ones(tf.shape(pairs)[:1], tf.float32))
    return check, hot


def segment_ratings(context, num_frames, num_classes, max_frames, where_):
    """Checks and returns the segment ratings of a batch.

    Args:
        context: parsed context with the three ragged segment keys.
        num_frames: int32 `[B]`, the frames read per video.
        num_classes: class ids must be below it (None: no upper bound).
        max_frames: named in the message when a segment starts past the frames
            read (None: the frames were not cut).
        where_: string `[B]`, see `where`.

    Returns:
        `(checks, {"segment_labels": int32 [B, None], "segment_start_times":
        int32 [B, None], "segment_scores": float32 [B, None]})`, ragged;
        `checks` are deferred `RowCheck`s: the caller gates its outputs on
        them (`vt_keras.data.checks.gate`).
    """
    labels, starts, scores = (context[k] for k in SEGMENT_KEYS)
    n_labels, n_starts, n_scores = labels.row_lengths(), starts.row_lengths(), scores.row_lengths()
    same = tf.logical_and(tf.equal(n_labels, n_starts), tf.equal(n_labels, n_scores))
    checks = [assert_rows(same, where_, lambda i: tf.strings.join([
        "segment_labels, segment_start_times and segment_scores hold ", tf.as_string(n_labels[i]), ", ",
        tf.as_string(n_starts[i]), " and ", tf.as_string(n_scores[i]),
        " values; expected one of each per rated (segment, class) pair"]))]
    frames = tf.cast(num_frames, tf.int64)
    start_values = starts.flat_values
    bad_start = tf.logical_or(start_values < 0, start_values >= tf.gather(frames, starts.value_rowids()))
    checks.append(ragged_values_check(starts, bad_start, where_, lambda i: tf.strings.join([
        "segment start time ", tf.as_string(tf.boolean_mask(starts[i], starts.with_flat_values(bad_start)[i])[0]),
        " outside the video's ",
        tf.as_string(frames[i]), " frames read" + ("" if max_frames is None else f" (max_frames={max_frames})")
        + "; expected 0 <= start < ",
        tf.as_string(frames[i])])))
    label_values = labels.flat_values
    bad_label = label_values < 0
    if num_classes is not None:
        bad_label = tf.logical_or(bad_label, label_values >= num_classes)
    limit = "" if num_classes is None else f" < num_classes={num_classes}"
    checks.append(ragged_values_check(labels, bad_label, where_, lambda i: tf.strings.join([
        "segment_labels: class id ", tf.as_string(tf.boolean_mask(labels[i], labels.with_flat_values(bad_label)[i])[0]),
        f" out of range; expected 0 <= class id{limit}"])))
    score_values = scores.flat_values
    bad_score = tf.logical_not(tf.logical_and(score_values >= 0.0, score_values <= 1.0))
    checks.append(ragged_values_check(scores, bad_score, where_, lambda i: tf.strings.join([
        "segment_scores: score ",
        tf.as_string(tf.boolean_mask(scores[i], scores.with_flat_values(bad_score)[i])[0], shortest=True),
        " outside [0, 1]; expected 1.0 (present) or 0.0 (absent)"])))
    out = {"segment_labels": tf.cast(labels, tf.int32), "segment_start_times": tf.cast(starts, tf.int32),
           "segment_scores": scores}
    return checks, out
