r"""bin/predict: run an export over records and write the Kaggle prediction CSV.

    bin/predict --export_dir=workdirs/late_fusion/export --data='data/test-*.tfrecord' \
        --output=predictions.csv

Uses only the SavedModel's `serving_default` signature (serialized
SequenceExamples in), as TF Serving would. The CSV has the header
`VideoId,LabelConfidencePairs` and one row per video: its id, then the top
classes as `class score` pairs by descending score (`%i %g`).
"""
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("export_dir", None, "A SavedModel written by bin/export or bin/train.")
    flags.DEFINE_string("data", None, "File pattern of frame-level records (comma-separated allowed).")
    flags.DEFINE_string("output", None, "The CSV to write.")
    flags.DEFINE_integer("batch_size", 256, "Examples per call of the signature.")
    flags.DEFINE_bool("skip_corrupt_records", False, "Skip a corrupt file's remaining records and "
                      "report it, instead of stopping.")
    flags.mark_flags_as_required(["export_dir", "data", "output"])


def format_row(video_id, classes, scores):
    pairs = " ".join(f"{int(c)} {float(s):g}" for c, s in zip(classes, scores))
    return f"{video_id},{pairs}"


def predict_files(export_dir, files, batch_size, skip_corrupt=False, log=print):
    """Yields CSV rows for every record of `files` through `serving_default`."""
    import tensorflow as tf

    from vt_keras.errors import DataError

    try:
        loaded = tf.saved_model.load(export_dir)
    except (OSError, ValueError, tf.errors.NotFoundError) as e:
        raise DataError(f"--export_dir={export_dir}: not a SavedModel ({str(e).splitlines()[0][:200]})") from e
    if "serving_default" not in loaded.signatures:
        raise DataError(f"--export_dir={export_dir} has no serving_default signature; "
                        f"found {sorted(loaded.signatures)}")
    serve = loaded.signatures["serving_default"]
    skipped = 0
    for path in files:
        ds = tf.data.TFRecordDataset(path).batch(batch_size)
        it = iter(ds)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except tf.errors.DataLossError as e:
                if not skip_corrupt:
                    raise DataError(f"{path}: corrupt or truncated TFRecord ({str(e).splitlines()[0][:120]}); "
                                    "rerun with --skip_corrupt_records to skip it") from e
                skipped += 1
                log(f"skipping the rest of corrupt file {path}")
                break
            try:
                out = serve(example_bytes=batch)
            except tf.errors.InvalidArgumentError as e:
                raise DataError(f"{path}: a record does not fit the export's input "
                                f"({str(e).splitlines()[0][:300]})") from e
            ids = out["video_id"].numpy()
            for vid, cls, sc in zip(ids, out["class_indexes"].numpy(), out["predictions"].numpy()):
                yield format_row(vid.decode("utf-8"), cls, sc)
    if skipped:
        log(f"skipped {skipped} corrupt file(s)")


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    from vt_keras.data.files import list_files
    from vt_keras.errors import DataError

    try:
        files = list_files(FLAGS.data)
    except DataError as e:
        raise DataError(f"--data={FLAGS.data}: {e}") from None
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
