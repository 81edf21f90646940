"""Video–text records: one `tf.train.SequenceExample` per video.

Format (see docs/video_text_format.md for the full description):

- context `id`: bytes, exactly one value.
- context `expert/<name>` (optional): float list, one per-video feature
  vector per name (raw inputs for losses such as CrossCLR's proximity).
- feature list `clip`: one entry per clip, either a float list of `clip_dim`
  values (`clip_encoding="float"`) or one bytes value of `clip_dim` uint8
  values quantized as in YouTube-8M (`clip_encoding="quantized"`,
  `x = q * 4/255 + 4/512 - 2`).
- feature list `caption`: one UTF-8 bytes entry per clip, aligned with `clip`.

Unknown keys are ignored, so producers may add their own (the synthetic
generator adds `synthetic/*` ground truth).

Errors. Checks that need the data run inside the tf.data graph, where they can
only fail as `tf.errors.InvalidArgumentError`. Their messages carry a marker;
run the code that iterates the dataset inside `with data_errors():` to get
them back as one-line `vt_keras.errors.DataError`s naming the file, the key,
what was expected and what was found.

Example:

```python
ds = video_text_dataset("/data/train-*.tfrecord", 32, clip_dim=64, max_clips=16)
with data_errors():
    for batch in ds:
        ...  # batch["clips"]: float32 [32, 16, 64]
```
"""
import contextlib
import re

import numpy as np
import tensorflow as tf

from vt_keras.data import checks
from vt_keras.data.files import list_files
from vt_keras.data.pipeline import record_dataset
from vt_keras.data.quantization import dequantize, quantize
from vt_keras.errors import DataError

# Importable from here too: code written against `video_text.list_files` keeps working.
__all__ = ["CLIP_ENCODINGS", "data_errors", "dequantize", "list_files", "make_video_text_example", "quantize",
           "parse_video_text_example", "read_captions", "video_text_dataset", "write_video_text_records"]

CLIP_ENCODINGS = ("float", "quantized")
EXPERT_PREFIX = "expert/"
# The marked line that `vt_keras.data.checks.data_errors` turns into a DataError.
_MARKER = "<DataError>"
_END = "</DataError>"
# Errors of the proto parser itself (wrong types, bytes that are no proto);
# `example_names` puts the file name after "Name:" / "example id:".
_PARSER_RE = re.compile(
    r"((?:Name: |Invalid protocol message input, example id: ).*?)(?:\s*\[\[|\s*\[Op:|\n|$)"
)


@contextlib.contextmanager
def data_errors():
    """`vt_keras.data.checks.data_errors` with hints for video-text records.

    The in-graph checks of this module use the marked lines of
    `vt_keras.data.checks`; records of the wrong proto types and damaged
    TFRecord data get a message that says what to check.
    """
    with checks.data_errors():
        try:
            yield
        except tf.errors.OpError as e:
            if checks.data_error_message(e) is not None:
                raise  # the outer context turns it into its DataError
            match = _PARSER_RE.search(e.message or "")
            if match and isinstance(e, tf.errors.InvalidArgumentError):
                raise DataError(
                    "record is not a video-text SequenceExample of the expected types "
                    f"(check clip_encoding): {' '.join(match.group(1).split())}"
                ) from None
            if isinstance(e, tf.errors.DataLossError):
                text = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message.splitlines()[0])
                raise DataError(f"corrupted TFRecord data: {' '.join(text.split())}") from None
            raise


def _check_encoding(clip_encoding):
    if clip_encoding not in CLIP_ENCODINGS:
        raise DataError(
            f"clip_encoding: expected one of {CLIP_ENCODINGS}, found {clip_encoding!r}"
        )


def make_video_text_example(video_id, clips, captions, *, clip_encoding="float",
                            expert_features=None):
    """Builds the `tf.train.SequenceExample` of one video.

    Args:
      video_id: str or bytes.
      clips: float array `[num_clips, clip_dim]`.
      captions: `num_clips` strings, caption `i` describing clip `i`.
      clip_encoding: "float" (float lists) or "quantized" (uint8 bytes).
      expert_features: optional `{name: 1-D float array}`, stored as
        `expert/<name>`.

    Returns:
      A `tf.train.SequenceExample`.
    """
    _check_encoding(clip_encoding)
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 2 or clips.shape[0] == 0:
        raise DataError(
            f"video {video_id!r}: expected clips of shape [num_clips >= 1, clip_dim], "
            f"found {clips.shape}"
        )
    captions = list(captions)
    if len(captions) != clips.shape[0]:
        raise DataError(
            f"video {video_id!r}: expected one caption per clip ({clips.shape[0]}), "
            f"found {len(captions)}"
        )
    ex = tf.train.SequenceExample()
    vid = video_id.encode("utf-8") if isinstance(video_id, str) else bytes(video_id)
    ex.context.feature["id"].bytes_list.value.append(vid)
    for name, values in (expert_features or {}).items():
        values = np.asarray(values, np.float32).reshape(-1)
        ex.context.feature[EXPERT_PREFIX + name].float_list.value.extend(values.tolist())
    clip_list = ex.feature_lists.feature_list["clip"]
    for clip in clips:
        if clip_encoding == "float":
            clip_list.feature.add().float_list.value.extend(clip.tolist())
        else:
            clip_list.feature.add().bytes_list.value.append(quantize(clip).tobytes())
    caption_list = ex.feature_lists.feature_list["caption"]
    for caption in captions:
        text = caption.encode("utf-8") if isinstance(caption, str) else bytes(caption)
        caption_list.feature.add().bytes_list.value.append(text)
    return ex


def write_video_text_records(path, examples):
    """Writes `SequenceExample`s (or their serialized bytes) to a TFRecord file.

    Returns:
      The number of records written.
    """
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for ex in examples:
            writer.write(ex if isinstance(ex, bytes) else ex.SerializeToString())
            count += 1
    return count


def _assert(ok, sources, message_parts):
    """An in-graph check; the message names the first failing record's file.

    `message_parts` are strings or `[B]` string tensors, joined per record.
    """
    bad = tf.logical_not(ok)
    first = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
    parts = [p if isinstance(p, str) else tf.gather(p, first) for p in message_parts]
    msg = tf.strings.join([_MARKER, tf.gather(sources, first), ": "] + parts + [_END])
    return tf.debugging.Assert(tf.reduce_all(ok), [msg])


def _expert_dims(expert_features):
    if isinstance(expert_features, str):
        expert_features = (expert_features,)
    if isinstance(expert_features, dict):
        return dict(expert_features)
    return {name: None for name in expert_features}


def parse_video_text_example(serialized_batch, clip_dim, max_clips, clip_encoding="float",
                             expert_features=(), sources=None):
    """Parses a batch of serialized video–text records into padded tensors.

    Args:
      serialized_batch: string `[B]`, serialized `SequenceExample`s.
      clip_dim: values per clip.
      max_clips: clips (and captions) kept per video; longer videos are
        truncated to their first `max_clips`, shorter ones padded.
      clip_encoding: "float" or "quantized" (see the module docstring).
      expert_features: names of context features `expert/<name>` to return,
        or `{name: dim}` to also check their sizes.
      sources: optional string `[B]` naming each record's file (for errors).

    Returns:
      `{"id": string [B], "clips": float32 [B, max_clips, clip_dim],
      "clip_mask": bool [B, max_clips], "num_clips": int32 [B],
      "captions": string [B, max_clips] ("" for padding),
      "caption_mask": bool [B, max_clips] (valid and non-empty),
      "expert/<name>": float32 [B, dim]}`.
    """
    _check_encoding(clip_encoding)
    experts = _expert_dims(expert_features)
    with data_errors():
        return _parse(serialized_batch, int(clip_dim), int(max_clips), clip_encoding, experts,
                      sources)


def _parse(serialized, clip_dim, max_clips, clip_encoding, experts, sources):
    serialized = tf.convert_to_tensor(serialized, tf.string)
    if sources is None:
        sources = tf.strings.join(["record ", tf.strings.as_string(tf.range(tf.size(serialized)))])
    # Everything is parsed as ragged so that a bad record reaches our checks
    # (with their messages) instead of failing inside the parser.
    context_spec = {"id": tf.io.RaggedFeature(tf.string)}
    for name in experts:
        context_spec[EXPERT_PREFIX + name] = tf.io.RaggedFeature(tf.float32)
    sequence_spec = {
        "clip": tf.io.RaggedFeature(tf.float32 if clip_encoding == "float" else tf.string),
        "caption": tf.io.RaggedFeature(tf.string),
    }
    context, sequences, _ = tf.io.parse_sequence_example(
        serialized, context_spec, sequence_spec, example_names=sources)
    # Both feature lists are ragged [B, (entries), (values)].
    clips, captions = sequences["clip"], sequences["caption"]
    clip_rows, caption_rows = clips.row_lengths(), captions.row_lengths()
    raw_values = clips.flat_values
    if clip_encoding == "float":
        clip_sizes = clips.values.row_lengths()
    else:
        byte_lengths = clips.values.with_flat_values(tf.strings.length(raw_values, unit="BYTE"))
        clip_sizes = tf.cast(tf.reduce_sum(byte_lengths, axis=1), clip_rows.dtype)
    clip_sizes = tf.RaggedTensor.from_row_lengths(clip_sizes, clip_rows)
    wrong = tf.not_equal(clip_sizes, clip_dim)
    first_wrong = tf.argmax(tf.cast(wrong, tf.int32).to_tensor(0), axis=1, output_type=tf.int32)
    ids = context["id"].to_tensor("?", shape=[None, 1])[:, 0]
    in_video = (" in video ", ids)

    def per_entry(counts, rows):  # every entry of a feature list holds one value
        return tf.reduce_all(tf.RaggedTensor.from_row_lengths(tf.equal(counts, 1), rows), axis=1)

    id_count = context["id"].row_lengths()
    checks = [
        (tf.equal(id_count, 1), "context key 'id': expected 1 bytes value, found ",
         tf.strings.as_string(id_count)),
        (clip_rows > 0, "feature list 'clip': expected at least 1 clip, found 0 (key missing "
         "or empty)", *in_video),
        (tf.equal(caption_rows, clip_rows), "feature list 'caption': expected one caption per "
         "clip (", tf.strings.as_string(clip_rows), "), found ",
         tf.strings.as_string(caption_rows), *in_video),
        (per_entry(captions.values.row_lengths(), caption_rows),
         "feature list 'caption': expected 1 bytes value per entry, found another count",
         *in_video),
        (tf.logical_not(tf.reduce_any(wrong, axis=1)),
         f"feature list 'clip': expected clip_dim={clip_dim} "
         f"{'values' if clip_encoding == 'float' else 'bytes'} per clip, found ",
         tf.strings.as_string(tf.gather(clip_sizes.to_tensor(0), first_wrong, batch_dims=1)),
         *in_video),
    ]
    if clip_encoding == "quantized":
        checks.append((per_entry(clips.values.row_lengths(), clip_rows),
                       "feature list 'clip': expected 1 bytes value per quantized clip, found "
                       "another count", *in_video))
    for name, dim in experts.items():
        lengths = tf.cast(context[EXPERT_PREFIX + name].row_lengths(), tf.int64)
        expected = lengths[:1] if dim is None else tf.constant([dim], tf.int64)
        checks.append((tf.logical_and(tf.equal(lengths, expected), lengths > 0),
                       f"context key '{EXPERT_PREFIX}{name}': expected "
                       + ("the same non-zero number of floats in every record" if dim is None
                          else f"{dim} floats") + ", found ", tf.strings.as_string(lengths)))
    with tf.control_dependencies([_assert(ok, sources, parts) for ok, *parts in checks]):
        num_clips = tf.cast(tf.minimum(clip_rows, max_clips), tf.int32)
        if clip_encoding == "quantized":
            raw_values = dequantize(tf.io.decode_raw(raw_values, tf.uint8, fixed_length=clip_dim))
        values = tf.reshape(raw_values, [-1, clip_dim])
        clip_tensor = tf.RaggedTensor.from_row_lengths(values, clip_rows)[:, :max_clips]
        captions = tf.RaggedTensor.from_row_lengths(captions.flat_values, caption_rows)
        captions = captions[:, :max_clips].to_tensor("", shape=[None, max_clips])
        clip_mask = tf.sequence_mask(num_clips, max_clips)
        batch = {
            "id": context["id"].to_tensor("", shape=[None, 1])[:, 0],
            "clips": clip_tensor.to_tensor(0.0, shape=[None, max_clips, clip_dim]),
            "clip_mask": clip_mask,
            "num_clips": num_clips,
            "captions": captions,
            "caption_mask": tf.logical_and(clip_mask, tf.not_equal(captions, "")),
        }
        for name, dim in experts.items():
            batch[EXPERT_PREFIX + name] = context[EXPERT_PREFIX + name].to_tensor(
                0.0, shape=[None, dim])
    return batch


def video_text_dataset(file_pattern, batch_size, *, clip_dim, max_clips=16, clip_encoding="float",
                       shuffle=False, repeat=False, drop_remainder=False, input_context=None,
                       seed=None, expert_features=(), shuffle_buffer=1024, skip_corrupt_records=False,
                       skip_batches=0, cycle_length=8, deterministic=True):
    """A `tf.data.Dataset` of parsed, padded video–text batches.

    The pipeline is `vt_keras.data.pipeline.record_dataset`, the one of the
    YouTube-8M readers: files sharded over input pipelines (records when there
    are fewer files than pipelines), each file checked for truncation or
    corruption, batched, then parsed a batch at a time.

    Args:
      file_pattern: glob pattern, several separated by commas, or a list of them.
      batch_size: examples per batch *of this dataset*; under a strategy pass
        `input_context.get_per_replica_batch_size(global_batch_size)`.
      clip_dim, max_clips, clip_encoding, expert_features: see
        `parse_video_text_example`.
      shuffle: shuffle file order and records (buffer `shuffle_buffer`).
      repeat: repeat forever.
      drop_remainder: drop a last partial batch (fixed shapes for training).
      input_context: an optional `tf.distribute.InputContext`.
      seed: shuffle seed; with `shuffle=False` the order is the file order.
      skip_corrupt_records: skip the unreadable rest of a truncated or corrupt
        file (counted in `data_counters()`, logged) instead of raising a
        `DataError` that names it.
      skip_batches: drop the first batches of this stream before parsing
        (resuming a run exactly where it stopped).
      cycle_length, deterministic: see `record_dataset`.

    Returns:
      A dataset of dicts as returned by `parse_video_text_example`. Iterate it
      inside `with data_errors():` to get data problems as `DataError`.

    Example:
      >>> ds = video_text_dataset("data/train-*.tfrecord", 32, clip_dim=64, max_clips=16)
    """
    _check_encoding(clip_encoding)
    if batch_size < 1:
        raise DataError(f"batch_size: expected >= 1, found {batch_size}")
    experts = _expert_dims(expert_features)

    def parse(records, sources):
        return _parse(records, int(clip_dim), int(max_clips), clip_encoding, experts, sources)

    return record_dataset(file_pattern, batch_size, parse, shuffle=shuffle, repeat=repeat,
                          drop_remainder=drop_remainder, input_context=input_context, seed=seed,
                          skip_corrupt_records=skip_corrupt_records, shuffle_buffer_size=shuffle_buffer,
                          cycle_length=cycle_length, deterministic=deterministic, skip_batches=skip_batches)


def read_captions(file_pattern, skip_corrupt_records=False):
    """Yields every caption (str) of the records matching `file_pattern`.

    Meant for `vt_keras.text.build_vocabulary` over the training split;
    `skip_corrupt_records` as in `video_text_dataset`.
    """
    spec = {"caption": tf.io.RaggedFeature(tf.string)}

    def parse(records, sources):
        _, seqs, _ = tf.io.parse_sequence_example(records, sequence_features=spec, example_names=sources)
        return seqs["caption"].flat_values

    with data_errors():
        for captions in record_dataset(file_pattern, 256, parse, skip_corrupt_records=skip_corrupt_records):
            for caption in captions.numpy():
                yield caption.decode("utf-8")
