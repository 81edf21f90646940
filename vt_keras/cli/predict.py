r"""bin/predict: run an export over records; write the Kaggle prediction CSV or the segment submission.

    bin/predict --export_dir=runs/late/export --data='data/test-*.tfrecord' --output=predictions.csv
    bin/predict --export_dir=runs/late/export --data='data/test-*.tfrecord' --output=submission.csv \
        --segments --segment_classes=segment_label_ids.csv --top_segments=100000

Videos: only the SavedModel's `serving_default` signature is used
(serialized records in, as TF Serving would): frame-level exports read
frame-level SequenceExamples, video-level exports video-level Examples; the
records' labels are never read, and the id is `id` or the 2017 release's
`video_id`. The CSV has the header `VideoId,LabelConfidencePairs` and one row
per video: its id, then the top classes as `class score` pairs by
descending score (`%i %g`).

Segments (`--segments`): every non-overlapping 5-frame segment of every
video (a partial tail is dropped; videos are read up to `--max_frames`) is
scored through the export's `predict_features` signature (frame-level
exports get the 5 frames, video-level exports their mean). For each class of
`--segment_classes` (one id per line, an optional header line; default:
every class) the best `--top_segments` segments are kept as batches stream
(memory bounded by classes x top_segments, not by the number of videos) and
written as the 2019 challenge's submission: header `Class,Segments`, rows
`class_id,videoid:start videoid:start ...`, best first; equal scores keep
the order in which the segments were read. `--segment_scores=video` gives
every segment its whole video's score instead (all its frames, or their
mean for a video-level export): the baseline that ranks a video's segments
by the video-level score alone.

A record that cannot be served (a missing feature, a feature of the wrong
size, no id) ends the run with one line naming the file, the record, the
key, what was expected and what was found.
"""
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("export_dir", None, "A SavedModel written by bin/export or bin/train.")
    flags.DEFINE_string("data", None, "File pattern of the records (comma-separated patterns allowed): frame-level "
                        "or video-level, as the export reads them (--segments: frame-level).")
    flags.DEFINE_string("output", None, "The CSV to write.")
    flags.DEFINE_integer("batch_size", 256, "Records per call of the signature.")
    flags.DEFINE_bool("skip_corrupt_records", False, "Skip a corrupt file's remaining records and "
                      "report it, instead of stopping.")
    flags.DEFINE_bool("segments", False, "Score every 5-frame segment and write the segment challenge's "
                      "submission (Class,Segments) instead of per-video predictions.")
    flags.DEFINE_string("segment_classes", None, "--segments: file of the class ids to rank segments for, one per "
                        "line, optional header line (the starter code's segment_label_ids.csv). "
                        "Default: every class.")
    flags.DEFINE_integer("top_segments", 100000, "--segments: segments kept per class, best first.")
    flags.DEFINE_integer("max_frames", 300, "--segments: frames read per video (YouTube-8M videos have at most 300).")
    flags.DEFINE_enum("segment_scores", "segment", ["segment", "video"],
                      "--segments: 'segment' scores each segment on its own frames; 'video' gives every segment "
                      "its whole video's score (the baseline that ranks a video's segments by the video-level "
                      "score alone; equal scores keep the order in which the segments were read).")
    flags.mark_flags_as_required(["export_dir", "data", "output"])


def format_row(video_id, classes, scores):
    pairs = " ".join(f"{int(c)} {float(s):g}" for c, s in zip(classes, scores))
    return f"{video_id},{pairs}"


def load_export(export_dir):
    """The loaded SavedModel; `DataError` if it is none or lacks `serving_default`."""
    import tensorflow as tf

    from vt_keras.errors import DataError

    try:
        loaded = tf.saved_model.load(export_dir)
    except (OSError, ValueError, tf.errors.NotFoundError) as e:
        raise DataError(f"--export_dir={export_dir}: not a SavedModel ({str(e).splitlines()[0][:200]})") from e
    if "serving_default" not in loaded.signatures:
        raise DataError(f"--export_dir={export_dir} has no serving_default signature; "
                        f"found {sorted(loaded.signatures)}")
    return loaded


def dense_inputs(loaded, export_dir):
    """`(kind, features, num_classes)` of an export's `predict_features`: "frame" (`[N, T, dim]`
    inputs and `num_frames`) or "video" (`[N, dim]` inputs)."""
    from vt_keras.errors import DataError

    signature = loaded.signatures.get("predict_features")
    if signature is None:
        raise DataError(f"--export_dir={export_dir}: --segments needs the predict_features signature of a "
                        f"classifier export; found {sorted(loaded.signatures)}")
    _, inputs = signature.structured_input_signature
    features = tuple(sorted((name, int(spec.shape[-1])) for name, spec in inputs.items() if name != "num_frames"))
    kind = "frame" if "num_frames" in inputs else "video"
    num_classes = signature.structured_outputs["scores"].shape[-1]
    return kind, features, None if num_classes is None else int(num_classes)


def call_signature(signature, where, **inputs):
    """Runs a signature; a record it cannot serve becomes the parser's one-line `DataError` after `where`."""
    import tensorflow as tf

    from vt_keras.data.checks import data_error_message
    from vt_keras.errors import DataError

    try:
        return signature(**inputs)
    except tf.errors.InvalidArgumentError as e:
        message = data_error_message(e)
        if message is not None:
            raise DataError(f"{where}, {message}") from None
        last = [line.strip() for line in e.message.strip().splitlines() if line.strip()]
        raise DataError(f"{where}: a record does not fit the export's input; expected serialized "
                        f"YouTube-8M records of the kind the export reads, found: {last[0][:200] if last else e}"
                        ) from None


def _file_batches(files, batch_size, skip_corrupt, log):
    """Yields `(path, records)` with every batch from one file, each file checked for truncation."""
    import tensorflow as tf

    from vt_keras.data.checks import data_errors, read_checked_records

    for path in files:
        size = tf.io.gfile.stat(path).length
        records = read_checked_records(tf.constant(path), tf.constant(size, tf.int64), skip_corrupt)
        with data_errors():
            for batch, _ in records.batch(batch_size):
                yield path, batch
    if skip_corrupt:
        from vt_keras.data.checks import data_counters

        skipped = data_counters().get("skipped_corrupt_files", 0)
        if skipped:
            log(f"skipped the unreadable rest of {skipped} corrupt file(s)")


def predict_files(export_dir, files, batch_size, skip_corrupt=False, log=print):
    """Yields CSV rows for every record of `files` through `serving_default`."""
    serve = load_export(export_dir).signatures["serving_default"]
    for path, records in _file_batches(files, batch_size, skip_corrupt, log):
        out = call_signature(serve, f"file '{path}'", example_bytes=records)
        for vid, cls, sc in zip(out["video_id"].numpy(), out["class_indexes"].numpy(), out["predictions"].numpy()):
            yield format_row(vid.decode("utf-8"), cls, sc)


def predict_segments(export_dir, pattern, classes=None, top_segments=100000, batch_size=256, max_frames=300,
                     skip_corrupt=False, log=print, video_scores=False):
    """The per-class top segments of every video of `pattern` (see the module docstring).

    Args:
        export_dir: a classifier export with `predict_features`.
        pattern: frame-level records.
        classes: class ids to rank segments for (None: every class).
        top_segments: segments kept per class.
        batch_size: videos parsed at a time.
        max_frames: frames read per video.
        skip_corrupt: skip a corrupt file's unreadable rest.
        log: where progress lines go.
        video_scores: score every segment with its whole video's score
            (all frames read for a frame-level export, their mean for a
            video-level one) instead of its own frames.

    Returns:
        `{class_id: [(segment_id, score), ...]}`, best first.
    """
    import tensorflow as tf

    from vt_keras.data.checks import iterate
    from vt_keras.data.pipeline import record_dataset
    from vt_keras.data.segments import SEGMENT_FRAMES, video_segments
    from vt_keras.data.submission import SegmentTopK
    from vt_keras.data.yt8m import parse_frame_example
    from vt_keras.errors import ConfigError

    loaded = load_export(export_dir)
    kind, features, num_classes = dense_inputs(loaded, export_dir)
    frame_features = features
    if kind == "video":
        # The mean of a segment's frames stands for the video-level features.
        bad = [name for name, _ in features if not name.startswith("mean_")]
        if bad:
            raise ConfigError(f"--export_dir={export_dir}: --segments with a video-level export needs features "
                              f"named mean_<frame feature> (as mean_rgb for rgb); found {bad}")
        frame_features = tuple((name[len("mean_"):], dim) for name, dim in features)
    classes = list(range(num_classes)) if classes is None else list(classes)
    top = SegmentTopK(classes, top_segments)
    signature = loaded.signatures["predict_features"]

    def parse(records, filenames):
        batch = parse_frame_example(records, frame_features, max_frames, num_classes, "auto", None, False, filenames)
        ids, starts, values = video_segments(batch, frame_features, pooled=kind == "video")
        inputs = {name: v for (name, _), v in zip(features, values)}
        if kind == "frame":
            inputs["num_frames"] = tf.fill(tf.shape(starts), SEGMENT_FRAMES)
        out = {"ids": ids, "starts": starts, "videos": batch["id"], "inputs": inputs}
        if video_scores:
            # One call per video; its segments take the video's row of scores.
            per_video = batch["num_frames"] // SEGMENT_FRAMES
            out["rows"] = tf.repeat(tf.range(tf.size(per_video)), per_video)
            if kind == "frame":
                out["inputs"] = {name: batch[name] for name, _ in features}
                out["inputs"]["num_frames"] = batch["num_frames"]
            else:
                valid = tf.cast(batch["mask"], tf.float32)[:, :, None]
                count = tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)
                out["inputs"] = {name: tf.reduce_sum(batch[frame] * valid, axis=1) / count
                                 for (name, _), (frame, _) in zip(features, frame_features)}
        return out

    videos = segments = 0
    for batch in iterate(record_dataset(pattern, batch_size, parse, skip_corrupt_records=skip_corrupt)):
        videos += int(batch["videos"].shape[0])
        if not batch["ids"].shape[0]:
            continue
        scores = call_signature(signature, f"--export_dir={export_dir}", **batch["inputs"])["scores"].numpy()
        if video_scores:
            scores = scores[batch["rows"].numpy()]
        ids = [f"{v.decode('utf-8')}:{int(s)}" for v, s in zip(batch["ids"].numpy(), batch["starts"].numpy())]
        top.add(ids, scores[:, classes])
        segments += len(ids)
        if videos % 10000 < batch["videos"].shape[0]:
            log(f"{videos} videos, {segments} segments scored")
    log(f"scored {segments} segments of {videos} videos for {len(classes)} classes")
    return top.ranked()


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    from vt_keras.data.files import list_files
    from vt_keras.errors import ConfigError, DataError

    try:
        files = list_files(FLAGS.data)
    except DataError as e:
        raise DataError(f"--data={FLAGS.data}: {e}") from None
    if FLAGS.batch_size < 1 or FLAGS.top_segments < 1 or FLAGS.max_frames < 5:
        raise ConfigError(f"--batch_size={FLAGS.batch_size}, --top_segments={FLAGS.top_segments}, "
                          f"--max_frames={FLAGS.max_frames}: expected >= 1, >= 1 and >= 5")
    if FLAGS.segments:
        from vt_keras.data.submission import read_segment_classes, write_submission

        classes = None
        if FLAGS.segment_classes:
            _, _, num_classes = dense_inputs(load_export(FLAGS.export_dir), FLAGS.export_dir)
            classes = read_segment_classes(FLAGS.segment_classes, num_classes)
        ranked = predict_segments(FLAGS.export_dir, files, classes, FLAGS.top_segments, FLAGS.batch_size,
                                  FLAGS.max_frames, FLAGS.skip_corrupt_records,
                                  video_scores=FLAGS.segment_scores == "video")
        write_submission(FLAGS.output, ranked)
        print(f"wrote the segments of {len(ranked)} classes to {FLAGS.output}")
        return 0
    count = 0
    with open(FLAGS.output, "w") as f:
        f.write("VideoId,LabelConfidencePairs\n")
        for row in predict_files(FLAGS.export_dir, files, FLAGS.batch_size, FLAGS.skip_corrupt_records):
            f.write(row + "\n")
            count += 1
            if count % 10000 == 0:
                print(f"{count} videos predicted")
    print(f"wrote {count} predictions to {FLAGS.output}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
