"""YouTube-8M records: quantization, batched parsing, tf.data pipelines, writers.

Frame-level records are `tf.train.SequenceExample`s (context `id`, `labels`;
one bytes entry of `dim` uint8 values per frame in each feature list),
video-level records are `tf.train.Example`s (`id`, `labels`, float lists such
as `mean_rgb`). Feature names and sizes are arguments (`features=(("rgb",
1024), ("audio", 128))`), so one modality or other extractors need no edits.
The id is `id` (2018+ releases) or `video_id` (2017), whichever a record
has (`id_key="auto"`); `labels_key=None` reads no labels (serving); the 2019
segment ratings are read with `segments=True` (see
`vt_keras.data.yt8m_fields` and `vt_keras.data.segments`). The formats:
docs/yt8m_data.md.

How bad data surfaces (see `vt_keras.data.checks`). The interleave tags each
record with its file; the parser asserts feature sizes, frame counts and
label ranges per record; a sentinel at the end of each file compares the
bytes read with the file size (a truncated or corrupt TFRecord stops being
readable early). Iterate under `data_errors()` or with `iterate(dataset)`
and a failed check is a `vt_keras.errors.DataError` with one line naming the
file, the record, the key, what was expected and what was found.

With `skip_corrupt_records=True` the unreadable rest of a corrupt file is
skipped instead: the records before the damage are kept, a warning naming
the file is logged and `data_counters()["skipped_corrupt_files"]` counts
such files. Records that parse but do not match the config (missing or
wrong-size feature, label out of range) are always errors: skipping them
would hide a wrong config. When the feature lists of one record disagree in
frame count, `num_frames` is the smallest count, the frames after it are
zeroed in every feature, and `data_counters()["frame_count_mismatches"]`
counts such records (a warning is logged for the first few).

Quantization (`vt_keras.data.quantization`), file listing
(`vt_keras.data.files`), the tf.data builder (`vt_keras.data.pipeline`) and
the writers (`vt_keras.data.yt8m_writers`) live in their own modules and can
be imported from here too (`yt8m.dequantize`, `yt8m.write_frame_records`).
"""
import tensorflow as tf

from vt_keras.data.checks import (assert_rows, data_counters, data_errors, describe_record, gate, iterate,
                                  report_if, reset_data_counters)
from vt_keras.data.files import list_files
from vt_keras.data.pipeline import record_dataset
from vt_keras.data.quantization import dequantize, dequantize_frames, quantize  # noqa: F401
from vt_keras.data.yt8m_fields import (context_spec, multi_hot_labels, normalize_features, pick_ids,
                                       segment_ratings, where)
from vt_keras.data.yt8m_writers import (FrameExampleWriter, VideoExampleWriter, make_frame_example,
                                        make_video_example, write_frame_records, write_video_records)
from vt_keras.errors import ConfigError
from vt_keras.ops import l2_normalize_concat  # noqa: F401  (also public here)

FRAME_FEATURES = (("rgb", 1024), ("audio", 128))
VIDEO_FEATURES = (("mean_rgb", 1024), ("mean_audio", 128))

# Re-exported: quantization, file listing, checks and writers have their own
# modules; code written against `yt8m.<name>` keeps working.
_WRITERS = ("FrameExampleWriter", "VideoExampleWriter", "make_frame_example", "make_video_example",
            "write_frame_records", "write_video_records")
__all__ = ["FRAME_FEATURES", "VIDEO_FEATURES", "dequantize", "quantize", "parse_frame_example",
           "parse_video_example", "list_files", "frame_dataset", "video_dataset", "data_errors", "iterate",
           "data_counters", "reset_data_counters", *_WRITERS]


# ---------------------------------------------------------------- parsing
def _record_kind_hint(serialized, missing):
    """For row i: "" or, when `missing[i]` (the expected feature is absent), what the record holds instead."""
    return lambda i: tf.cond(missing[i], lambda: tf.strings.join(["; ", describe_record(serialized[i])]),
                             lambda: tf.constant(""))


def parse_frame_example(
    serialized,
    features=FRAME_FEATURES,
    max_frames=300,
    num_classes=3862,
    id_key="auto",
    labels_key="labels",
    l2_normalize=False,
    filenames=None,
    segments=False,
    count_problems=True,
    dtype="float32",
):
    """Parses a batch of frame-level SequenceExamples.

    Args:
        serialized: string `[B]`, serialized `tf.train.SequenceExample`s.
        features: `(name, dim)` pairs, one feature list of `dim` bytes per frame each.
        max_frames: frames kept per video; later frames are dropped.
        num_classes: size of the multi-hot label vector (and the bound of
            segment class ids).
        id_key: context key of the video id: "auto" (per record, `id` of the
            2018+ releases or `video_id` of the 2017 one) or a key.
        labels_key: context key of the label ids; None reads no labels (what
            serving does: a record's labels, any or none, never matter).
        l2_normalize: L2-normalise the concatenation of all features of each
            frame (the starter code's input normalisation).
        filenames: optional string `[B]` of source files, named in errors.
        segments: also read the 2019 segment ratings (see
            `vt_keras.data.yt8m_fields`), checked: equal lengths, start times
            inside the frames read, class ids below `num_classes`.
        count_problems: count and log records whose feature lists disagree in
            frame count (`data_counters()`), and build the message of a
            failed check only when the error is read: `data_errors()` and
            `iterate()` re-parse the failing batch (a smaller graph, faster
            in tf.data; see `vt_keras.data.checks.gate`). False handles
            problems the same and fails with the same messages built in the
            graph, without Python callbacks (for SavedModel exports).
        dtype: "float32" returns dequantized frames; "uint8" returns the
            stored codes, padded with code 0, a quarter of the bytes to move to
            the accelerator, where `vt_keras.data.quantization.dequantize_frames`
            turns them and the mask into the same float32 frames bit for bit
            (and applies `l2_normalize` there: it must be False here).

    Returns:
        `{"id": string [B], name: float32 [B, max_frames, dim] per feature,
        "num_frames": int32 [B], "mask": bool [B, max_frames],
        "labels": float32 [B, num_classes]}` (no "labels" when `labels_key` is
        None); with `segments`, also ragged `"segment_labels"`,
        `"segment_start_times"` (int32) and `"segment_scores"` (float32)
        `[B, None]`. Values are dequantized and padded with 0.0 after
        dequantization; `num_frames = min(frames, max_frames)`, the smallest
        count over features if they disagree.

    Example:
        >>> batch = parse_frame_example(records, num_classes=3862)  # records: string [B]
        >>> batch["rgb"].shape, batch["labels"].shape
        (TensorShape([B, 300, 1024]), TensorShape([B, 3862]))
    """
    return _parse_frame_example(serialized, features, max_frames, num_classes, id_key, labels_key, l2_normalize,
                                filenames, segments, count_problems, dtype, messages_in_graph=not count_problems)


def _parse_frame_example(serialized, features, max_frames, num_classes, id_key, labels_key, l2_normalize,
                         filenames, segments, count_problems, dtype, messages_in_graph):
    """`parse_frame_example`; `messages_in_graph=False` builds failure messages in a callback (see `gate`)."""
    args = (features, max_frames, num_classes, id_key, labels_key, l2_normalize)
    features = normalize_features(features)
    if dtype not in ("float32", "uint8"):
        raise ConfigError(f"dtype={dtype!r}: expected 'float32' (dequantized frames) or 'uint8' (the codes)")
    if dtype == "uint8" and l2_normalize:
        raise ConfigError("l2_normalize=True with dtype='uint8': the normalisation applies to dequantized "
                          "frames; pass it to dequantize_frames instead")
    context, lists, lengths = tf.io.parse_sequence_example(
        serialized,
        context_features=context_spec(id_key, labels_key, segments),
        sequence_features={name: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
                           for name, _ in features},
    )
    ids, check = pick_ids(context, id_key, filenames)
    where_ = where(ids, filenames)
    checks, rows, out = [check], [], {}
    if labels_key is not None:
        check, out["labels"] = multi_hot_labels(context[labels_key], num_classes, where_)
        checks.append(check)
    for name, dim in features:
        # Dense [B, frames] bytes, padded with "" past each video's length.
        count, frame_bytes = lengths[name], tf.strings.length(lists[name])
        wrong = tf.logical_and(tf.sequence_mask(count, tf.shape(frame_bytes)[1]), frame_bytes != dim)
        rows.append(count)
        hint = _record_kind_hint(serialized, count <= 0)
        checks.append(assert_rows(count > 0, where_, lambda i, name=name, dim=dim, hint=hint: tf.strings.join([
            f"feature list '{name}' is missing or empty; expected frames of {dim} bytes, found 0 frames",
            hint(i)])))
        checks.append(assert_rows(
            tf.logical_not(tf.reduce_any(wrong, axis=1)), where_,
            lambda i, b=frame_bytes, w=wrong, name=name, dim=dim: tf.strings.join([
                f"feature list '{name}' expected {dim} bytes per frame, found ",
                tf.as_string(tf.boolean_mask(b, w)[0])])))
    shortest = tf.reduce_min(tf.stack(rows), axis=0)
    tolerated = []
    if len(rows) > 1 and count_problems:
        mismatch = tf.reduce_any(tf.stack(rows) != shortest, axis=0)
        tolerated.append(report_if(tf.reduce_any(mismatch), "frame_count_mismatches", lambda: tf.strings.join([
            where_[tf.argmax(tf.cast(mismatch, tf.int32), output_type=tf.int32)],
            ": feature lists disagree in frame count; using the smallest"])))
    num_frames = tf.cast(tf.minimum(shortest, max_frames), tf.int32)
    if segments:
        segment_checks, segment_out = segment_ratings(context, num_frames, num_classes, max_frames, where_)
        checks.extend(segment_checks)
    recheck = None
    if not messages_in_graph:
        def recheck_fn(records, *names):
            # Eagerly, outside tf.data, with the messages in the graph: raises the first failure.
            _parse_frame_example(tf.constant(records), *args, tf.constant(names[0]) if names else None, segments,
                                 False, dtype, messages_in_graph=True)

        recheck = (recheck_fn, [serialized] + ([] if filenames is None else [filenames]))
    # Every check in one conditional (see `vt_keras.data.checks.gate`), tolerated problems in another;
    # every output waits for both.
    with tf.control_dependencies([gate(checks, recheck), gate(tolerated)]):
        if "labels" in out:
            out["labels"] = tf.identity(out["labels"])
        num_frames = tf.identity(num_frames)
        mask = tf.sequence_mask(num_frames, max_frames)
        out.update({"id": tf.identity(ids), "num_frames": num_frames, "mask": mask})
        if segments:
            out.update({k: v.with_flat_values(tf.identity(v.flat_values)) for k, v in segment_out.items()})
        values = []
        for name, dim in features:
            # Frames are checked to be `dim` bytes each; missing frames of the
            # shorter videos are "" and decode to zeros. Dequantize only the
            # batch's longest `t <= max_frames` frames, then pad with zeros.
            frames = lists[name][:, :max_frames]
            steps = tf.shape(frames)[1]
            q = tf.io.decode_raw(frames, tf.uint8, fixed_length=dim)
            if dtype == "uint8":
                # Codes past num_frames stay; dequantize_frames zeroes them with the mask.
                q = tf.pad(q, [[0, 0], [0, max_frames - steps], [0, 0]])
                q = tf.reshape(q, [-1, max_frames, dim])
                q.set_shape(ids.shape[:1].concatenate([max_frames, dim]))
                values.append(q)
                continue
            x = dequantize(q)
            # Zero the padding and any frames past `num_frames` (a pass saved
            # when there are none: one record, or videos of equal length).
            valid = mask[:, :steps]
            x = tf.cond(tf.reduce_all(valid), lambda x=x: x, lambda x=x, v=valid: tf.where(v[:, :, None], x, 0.0))
            x = tf.pad(x, [[0, 0], [0, max_frames - steps], [0, 0]])
            x = tf.reshape(x, [-1, max_frames, dim])
            x.set_shape(ids.shape[:1].concatenate([max_frames, dim]))  # keep a static batch size
            values.append(x)
        if l2_normalize:
            values = l2_normalize_concat(values)
        out.update({name: v for (name, _), v in zip(features, values)})
    return out


def parse_video_example(
    serialized,
    features=VIDEO_FEATURES,
    num_classes=3862,
    id_key="auto",
    labels_key="labels",
    l2_normalize=False,
    filenames=None,
):
    """Parses a batch of video-level Examples.

    Args:
        serialized: string `[B]`, serialized `tf.train.Example`s.
        features: `(name, dim)` pairs, a float list of length `dim` each.
        num_classes, id_key, labels_key, l2_normalize, filenames: as in
            `parse_frame_example` (`id_key="auto"` reads the 2017 release's
            `video_id` and the later `id`; `labels_key=None` for serving).

    Returns:
        `{"id": string [B], name: float32 [B, dim] per feature, "labels":
        float32 [B, num_classes]}` (no "labels" when `labels_key` is None).

    Example:
        >>> batch = parse_video_example(records, num_classes=3862)  # records: string [B]
        >>> batch["mean_rgb"].shape
        TensorShape([B, 1024])
    """
    features = normalize_features(features)
    spec = context_spec(id_key, labels_key)
    spec.update({name: tf.io.VarLenFeature(tf.float32) for name, _ in features})
    parsed = tf.io.parse_example(serialized, spec)
    ids, check = pick_ids(parsed, id_key, filenames)
    where_ = where(ids, filenames)
    checks, out = [check], {}
    if labels_key is not None:
        check, out["labels"] = multi_hot_labels(parsed[labels_key], num_classes, where_)
        checks.append(check)
    for name, dim in features:
        rows = tf.cast(parsed[name].indices[:, 0], tf.int32)
        length = tf.math.bincount(rows, minlength=tf.size(ids), maxlength=tf.size(ids))
        hint = _record_kind_hint(serialized, length == 0)
        checks.append(assert_rows(length == dim, where_, lambda i, name=name, dim=dim, length=length, hint=hint:
                                  tf.strings.join([f"feature '{name}' expected {dim} floats, found ",
                                                   tf.as_string(length[i]), hint(i)])))
    with tf.control_dependencies([gate(checks)]):
        out = {k: tf.identity(v) for k, v in out.items()}
        out["id"] = tf.identity(ids)
        # Every row holds exactly `dim` values (checked), in row-major order.
        values = [tf.reshape(parsed[name].values, [-1, dim]) for name, dim in features]
        if l2_normalize:
            values = l2_normalize_concat(values)
        out.update({name: v for (name, _), v in zip(features, values)})
    return out


# --------------------------------------------------------------- datasets
_DATASET_DOC = """
    Args:
        file_pattern: a glob, several separated by commas, or a list of them.
            A pattern matching no file is a `DataError` naming it.
        batch_size: examples per batch of this dataset (per replica when
            built by `distribute_datasets_from_function`).
        shuffle, repeat, drop_remainder, input_context, seed,
        skip_corrupt_records, shuffle_buffer_size, cycle_length,
        deterministic, skip_batches: as in
            `vt_keras.data.pipeline.record_dataset` (`skip_batches`: the
            first batches of this stream are dropped before parsing, so a
            resumed run continues exactly where it stopped).
        Other arguments go to the parser.

    Iterate under `data_errors()` or with `iterate()` to get `DataError`s.
"""


def frame_dataset(file_pattern, batch_size, *, features=FRAME_FEATURES, max_frames=300, num_classes=3862,
                  shuffle=False, repeat=False, drop_remainder=False, input_context=None, seed=None,
                  skip_corrupt_records=False, l2_normalize=False, id_key="auto", labels_key="labels",
                  shuffle_buffer_size=256, cycle_length=8, deterministic=True, skip_batches=0, dtype="float32"):
    """A batched, parsed dataset of frame-level records (see `parse_frame_example`).
    {doc}
        dtype: "float32" (the default) gives dequantized frames; "uint8" the
            stored codes, which the trainer dequantizes on the accelerator
            (`vt_keras.data.quantization.dequantize_frames`): a quarter of the
            host memory traffic and host-to-device transfer.

    Example:
        >>> ds = frame_dataset("data/train-*.tfrecord", 32, num_classes=88)
        >>> codes = frame_dataset("data/train-*.tfrecord", 32, num_classes=88, dtype="uint8")
    """
    features = normalize_features(features)

    def parse(serialized, filenames):
        return parse_frame_example(serialized, features, max_frames, num_classes, id_key, labels_key,
                                   l2_normalize, filenames, dtype=dtype)

    return record_dataset(file_pattern, batch_size, parse, shuffle=shuffle, repeat=repeat,
                          drop_remainder=drop_remainder, input_context=input_context, seed=seed,
                          skip_corrupt_records=skip_corrupt_records, shuffle_buffer_size=shuffle_buffer_size,
                          cycle_length=cycle_length, deterministic=deterministic, skip_batches=skip_batches)


def video_dataset(file_pattern, batch_size, *, features=VIDEO_FEATURES, num_classes=3862, shuffle=False,
                  repeat=False, drop_remainder=False, input_context=None, seed=None,
                  skip_corrupt_records=False, l2_normalize=False, id_key="auto", labels_key="labels",
                  shuffle_buffer_size=1024, cycle_length=8, deterministic=True, skip_batches=0):
    """A batched, parsed dataset of video-level records (see `parse_video_example`).
    {doc}
    Example:
        >>> ds = video_dataset("data/train-*.tfrecord", 256, num_classes=3862)
    """
    features = normalize_features(features)

    def parse(serialized, filenames):
        return parse_video_example(serialized, features, num_classes, id_key, labels_key, l2_normalize, filenames)

    return record_dataset(file_pattern, batch_size, parse, shuffle=shuffle, repeat=repeat,
                          drop_remainder=drop_remainder, input_context=input_context, seed=seed,
                          skip_corrupt_records=skip_corrupt_records, shuffle_buffer_size=shuffle_buffer_size,
                          cycle_length=cycle_length, deterministic=deterministic, skip_batches=skip_batches)


frame_dataset.__doc__ = frame_dataset.__doc__.replace("{doc}", _DATASET_DOC)
video_dataset.__doc__ = video_dataset.__doc__.replace("{doc}", _DATASET_DOC)
