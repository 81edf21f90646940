"""Features of one's own videos, from MediaPipe's YouTube-8M feature extractor, as YouTube-8M records.

The extractor writes one `tf.train.SequenceExample` per video, often as a
bare serialized proto file (not a TFRecord), with float feature lists
`RGB/feature/floats` (1024 floats per frame, one frame per second) and
`AUDIO/feature/floats` (128 per second), PCA-projected like the released
features but not quantized, and no id or labels.

`convert_features` turns such files (bare protos or TFRecords of them, one
or many) into standard YouTube-8M records that every reader and export of
this library (and the starter code) reads:

- frame level: a `SequenceExample` with context `id` and an empty `labels`
  list, feature lists `rgb` and `audio` of one bytes entry per frame,
  quantized exactly as the released data (`vt_keras.data.quantization`:
  `round((clip(x, -2, 2) + 2) * 255 / 4)`, which `dequantize` inverts within
  one step, 4/255);
- video level: an `Example` with `id`, empty `labels`, `mean_rgb` and
  `mean_audio`: the mean over the frames of the dequantized frame codes, as
  the released video-level features are built.

Frames: when the two feature lists differ in length, the frames after the
shorter one are dropped, and at most `max_frames` (300, the YouTube-8M
limit) are kept, the first ones. The id is given, or the input file's name
without its extension (with `-<n>` after it for the n-th record of a TFRecord
file holding several).
"""
import os

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from vt_keras.data.files import list_files
from vt_keras.data.quantization import dequantize, quantize
from vt_keras.data.yt8m_writers import FrameExampleWriter, VideoExampleWriter
from vt_keras.errors import ConfigError, DataError

__all__ = ["MEDIAPIPE_KEYS", "convert_features", "read_feature_file", "sequence_features"]

# Feature list of the extractor -> feature name in YouTube-8M records.
MEDIAPIPE_KEYS = (("RGB/feature/floats", "rgb"), ("AUDIO/feature/floats", "audio"))


def read_feature_file(path):
    """The `SequenceExample`s of one extractor output file: a TFRecord file or one bare serialized proto.

    Returns:
        A list of `(name, tf.train.SequenceExample)`; `name` is `path` for a
        bare proto and `path[n]` for the n-th record of a TFRecord file.

    Raises:
        DataError: the file is neither, or a TFRecord file is damaged after
            some records (naming the file).
    """
    if not tf.io.gfile.exists(path):
        raise DataError(f"--input file '{path}' does not exist")
    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        if records:
            raise DataError(f"'{path}': a TFRecord file truncated or corrupt after {len(records)} records") from None
        # Not a TFRecord file: the extractor's bare serialized proto.
        with tf.io.gfile.GFile(path, "rb") as f:
            return [(path, _parse(f.read(), path))]
    return [(f"{path}[{n}]", _parse(record, f"{path}[{n}]")) for n, record in enumerate(records)]


def _parse(blob, where):
    try:
        return tf.train.SequenceExample.FromString(blob)
    except DecodeError:
        raise DataError(f"'{where}': expected a serialized tf.train.SequenceExample (the output of MediaPipe's "
                        "YouTube-8M feature extractor) or a TFRecord file of them; found bytes that are "
                        "neither") from None


def sequence_features(example, where, keys=MEDIAPIPE_KEYS, max_frames=300):
    """The float frames of `example`'s feature lists: `{name: float32 [frames, dim]}`.

    Args:
        example: a `tf.train.SequenceExample`.
        where: what to name in errors (the file).
        keys: `(feature list, name)` pairs to read.
        max_frames: frames kept (the first ones).

    Raises:
        DataError: a feature list is missing, empty, not float lists, or has
            frames of different sizes.
    """
    lists = example.feature_lists.feature_list
    out = {}
    for key, name in keys:
        if key not in lists or not lists[key].feature:
            found = ", ".join(f"'{k}'" for k in sorted(lists)) or "none"
            raise DataError(f"'{where}': expected the float feature list '{key}' (one vector per frame), "
                            f"found feature lists {found}")
        frames = []
        for i, feature in enumerate(lists[key].feature):
            if feature.WhichOneof("kind") != "float_list":
                raise DataError(f"'{where}': feature list '{key}', frame {i}: expected a float list, found "
                                f"{feature.WhichOneof('kind') or 'an empty feature'}")
            frames.append(feature.float_list.value)
        sizes = {len(f) for f in frames}
        if len(sizes) != 1 or 0 in sizes:
            raise DataError(f"'{where}': feature list '{key}': expected frames of one non-zero size, found sizes "
                            f"{sorted(sizes)}")
        out[name] = np.asarray(frames, np.float32)
    count = min(min(len(v) for v in out.values()), int(max_frames))
    return {name: values[:count] for name, values in out.items()}


def _video_id(path, index, count):
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if count == 1 else f"{stem}-{index}"


def convert_features(file_pattern, output, video_level=False, video_id=None, keys=MEDIAPIPE_KEYS, max_frames=300):
    """Converts extractor output files into one TFRecord file of YouTube-8M records.

    Args:
        file_pattern: the extractor's files: a glob, several separated by
            commas, bare serialized protos or TFRecord files.
        output: the TFRecord file to write.
        video_level: write video-level `Example`s (`mean_rgb`, `mean_audio`)
            instead of frame-level `SequenceExample`s.
        video_id: the id of the (single) video; default: the file name.
        keys: `(extractor feature list, record feature name)` pairs.
        max_frames: frames kept per video (the first ones).

    Returns:
        A list of `(video_id, frames)` per video written.

    Example:
        >>> convert_features("features/*.pb", "mine.tfrecord")
        [('holiday', 212), ('talk', 300)]
    """
    if int(max_frames) < 1:
        raise ConfigError(f"max_frames: expected >= 1, found {max_frames}")
    examples = []
    for path in list_files(file_pattern, kind="feature file"):
        found = read_feature_file(path)
        examples.extend((_video_id(path, n, len(found)), where, example) for n, (where, example) in enumerate(found))
    if video_id is not None and len(examples) != 1:
        raise ConfigError(f"--video_id={video_id} names one video; the input holds {len(examples)} videos (ids then "
                          "come from the file names)")
    ids = [video_id or vid for vid, _, _ in examples]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"the input files give video id(s) {twice} more than once; expected one file name per video")
    writer = VideoExampleWriter(output) if video_level else FrameExampleWriter(output)
    written = []
    with writer:
        for vid, (_, where, example) in zip(ids, examples):
            frames = sequence_features(example, where, keys, max_frames)
            codes = {name: quantize(values) for name, values in frames.items()}
            if video_level:
                record = {f"mean_{name}": dequantize(c).mean(axis=0) for name, c in codes.items()}
            else:
                record = codes
            writer.write({"id": vid, "labels": [], **record})
            written.append((vid, len(next(iter(codes.values())))))
    return written
