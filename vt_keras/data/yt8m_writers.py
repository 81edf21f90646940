"""Writers of YouTube-8M-format records (frame level and video level).

An example is a dict: `"id"` (str), `"labels"` (int ids), for frame-level
records optionally the 2019 segment ratings (`"segment_labels"`,
`"segment_start_times"`, `"segment_scores"`: lists of one entry per rated
(segment, class) pair, written to the context), and one entry per feature. Frame-level features are arrays `[frames, dim]`: floats are
quantized to uint8 on write (`vt_keras.data.quantization.quantize`), uint8 arrays
are written as they are. Video-level features are float vectors `[dim]`,
written as float lists like the released `mean_rgb`. Protos are serialized
deterministically, so the same examples always give byte-identical files.
"""
import numpy as np
import tensorflow as tf

from vt_keras.data.quantization import quantize
from vt_keras.errors import DataError

SEGMENT_KEYS = ("segment_labels", "segment_start_times", "segment_scores")
_RESERVED = ("id", "labels", *SEGMENT_KEYS)


def _split(example):
    if "id" not in example or "labels" not in example:
        raise DataError(f"example: expected keys 'id' and 'labels', found {sorted(example)}")
    features = {k: v for k, v in example.items() if k not in _RESERVED}
    segments = {k: example[k] for k in SEGMENT_KEYS if k in example}
    return example["id"], example["labels"], features, segments


def _segment_context(segments):
    """Context features of the segment ratings (all three keys, or none)."""
    if not segments:
        return {}
    if len(segments) != len(SEGMENT_KEYS):
        raise DataError(f"segment ratings: expected all of {list(SEGMENT_KEYS)}, found {sorted(segments)}")
    lengths = {k: len(v) for k, v in segments.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"segment ratings: expected one entry of each key per rated pair, found lengths {lengths}")
    return {
        "segment_labels": tf.train.Feature(int64_list=tf.train.Int64List(
            value=np.asarray(segments["segment_labels"], np.int64).tolist())),
        "segment_start_times": tf.train.Feature(int64_list=tf.train.Int64List(
            value=np.asarray(segments["segment_start_times"], np.int64).tolist())),
        "segment_scores": tf.train.Feature(float_list=tf.train.FloatList(
            value=np.asarray(segments["segment_scores"], np.float32).tolist())),
    }


def _context(video_id, labels, id_key, labels_key):
    video_id = video_id.encode("utf-8") if isinstance(video_id, str) else bytes(video_id)
    labels = np.asarray(labels, np.int64).reshape(-1)
    return {
        id_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id])),
        labels_key: tf.train.Feature(int64_list=tf.train.Int64List(value=labels.tolist())),
    }


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _bytes_feature_list(codes):
    """A FeatureList with one bytes entry per row of uint8 `codes` [frames, dim].

    Building one Feature object per frame in Python dominated writing time,
    so the wire format is assembled with numpy and parsed once: in a
    FeatureList every frame is the same header (field 1 of FeatureList,
    Feature and BytesList, each with its length) followed by its bytes.
    """
    dim = codes.shape[1]
    bytes_list = 1 + len(_varint(dim)) + dim
    feature = 1 + len(_varint(bytes_list)) + bytes_list
    header = np.frombuffer(b"\x0a" + _varint(feature) + b"\x0a" + _varint(bytes_list) + b"\x0a" + _varint(dim),
                           np.uint8)
    wire = np.concatenate([np.broadcast_to(header, (len(codes), len(header))), codes], axis=1)
    return tf.train.FeatureList.FromString(wire.tobytes())


def make_frame_example(video_id, labels, features, id_key="id", labels_key="labels", segments=None):
    """Builds a frame-level `tf.train.SequenceExample`.

    Args:
        video_id: the video id (str or bytes).
        labels: iterable of int class ids.
        features: dict name -> array `[frames, dim]`; floats are quantized,
            uint8 values are kept as they are.
        id_key, labels_key: context keys.
        segments: optional segment ratings, a dict of `segment_labels`,
            `segment_start_times` and `segment_scores` (equal lengths).

    Example:
        >>> make_frame_example("v1", [3, 7], {"rgb": np.zeros([5, 1024])})
    """
    lists = {}
    for name, values in features.items():
        values = np.asarray(values)
        if values.ndim != 2:
            raise DataError(f"feature '{name}': expected an array [frames, dim], found shape {values.shape}")
        codes = values if values.dtype == np.uint8 else quantize(values)
        lists[name] = _bytes_feature_list(codes)
    context = _context(video_id, labels, id_key, labels_key)
    context.update(_segment_context(segments))
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )


def make_video_example(video_id, labels, features, id_key="id", labels_key="labels"):
    """Builds a video-level `tf.train.Example` with float-list features.

    Example:
        >>> make_video_example("v1", [3], {"mean_rgb": np.zeros(1024), "mean_audio": np.zeros(128)})
    """
    feature = _context(video_id, labels, id_key, labels_key)
    for name, values in features.items():
        values = np.asarray(values, np.float32)
        if values.ndim != 1:
            raise DataError(f"feature '{name}': expected a vector [dim], found shape {values.shape}")
        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feature))


class _RecordWriter:
    def __init__(self, path, id_key="id", labels_key="labels"):
        self.path = path
        self.id_key = id_key
        self.labels_key = labels_key
        self.count = 0
        self._writer = tf.io.TFRecordWriter(path)

    def write(self, example):
        """Writes one example dict; see the module docstring."""
        video_id, labels, features, segments = _split(example)
        if segments:
            if self._make is not make_frame_example:
                raise DataError(f"example '{video_id}': segment ratings belong to frame-level records")
            proto = make_frame_example(video_id, labels, features, self.id_key, self.labels_key, segments)
        else:
            proto = self._make(video_id, labels, features, self.id_key, self.labels_key)
        self._writer.write(proto.SerializeToString(deterministic=True))
        self.count += 1

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FrameExampleWriter(_RecordWriter):
    """Writes frame-level examples to one TFRecord file.

    Example:
        >>> with FrameExampleWriter("train-00000-of-00001.tfrecord") as w:
        ...     w.write({"id": "v1", "labels": [3], "rgb": rgb, "audio": audio})
    """

    _make = staticmethod(make_frame_example)


class VideoExampleWriter(_RecordWriter):
    """Writes video-level examples (`mean_rgb`, `mean_audio`, ...) to one TFRecord file."""

    _make = staticmethod(make_video_example)


def write_frame_records(path, examples, id_key="id", labels_key="labels"):
    """Writes frame-level example dicts to the TFRecord file `path`; returns the count."""
    with FrameExampleWriter(path, id_key, labels_key) as writer:
        for example in examples:
            writer.write(example)
    return writer.count


def write_video_records(path, examples, id_key="id", labels_key="labels"):
    """Writes video-level example dicts to the TFRecord file `path`; returns the count."""
    with VideoExampleWriter(path, id_key, labels_key) as writer:
        for example in examples:
            writer.write(example)
    return writer.count
