r"""bin/evaluate_segments: MAP@K of a segment submission against segment-rated records.

    bin/evaluate_segments --data='data/test-*.tfrecord' --submission=submission.csv [--top_n=100000]

The 2019 YouTube-8M segment challenge's metric
(`vt_keras.metrics.segments.segment_map`): for each class of the
submission, its list is cut at `--top_n`, segments not rated for that class
are removed, and the average precision of what is left is taken with the
class's number of positively rated segments (found or not) as the
denominator; MAP@K is the mean over the submission's classes. A class
without any positive rating is left out of the mean and counted.

Prints a table and, as the last line, one JSON object with "map",
"num_classes" (the classes averaged) and the counts of the table.
"""
import json
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("data", None, "File pattern of the segment-rated frame-level records (comma-separated "
                        "patterns allowed).")
    flags.DEFINE_string("submission", None, "The submission CSV (header Class,Segments), e.g. from "
                        "bin/predict --segments.")
    flags.DEFINE_integer("top_n", 100000, "K: each class's list is cut to its first top_n segments.")
    flags.DEFINE_integer("num_classes", 0, "If > 0, rated class ids must be below it.")
    flags.DEFINE_string("frames_key", "rgb", "The feature list whose length is a video's frame count (rated "
                        "segments must start inside the video).")
    flags.DEFINE_bool("skip_corrupt_records", False, "Skip a corrupt file's remaining records and report it.")
    flags.mark_flags_as_required(["data", "submission"])


def format_table(result, top_n):
    rows = [(f"MAP@{top_n}", f"{result['map']:.4f}"),
            ("classes averaged", result["num_classes"]),
            ("classes without positive ratings (not averaged)", result["classes_without_positives"]),
            ("segments submitted (after the cut)", result["submitted"]),
            ("  rated for their class", result["rated"]),
            ("  rated positive", result["found"]),
            ("positive ratings of the submitted classes", result["positives"])]
    return "\n".join(f"{name:<50} {value}" for name, value in rows)


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    from vt_keras.data.files import list_files
    from vt_keras.data.segments import read_segment_ratings
    from vt_keras.data.submission import read_submission
    from vt_keras.errors import ConfigError, DataError
    from vt_keras.metrics.segments import segment_map

    if FLAGS.top_n < 1:
        raise ConfigError(f"--top_n={FLAGS.top_n}: expected a positive integer")
    submission = read_submission(FLAGS.submission)
    try:
        files = list_files(FLAGS.data)
    except DataError as e:
        raise DataError(f"--data={FLAGS.data}: {e}") from None
    ratings = read_segment_ratings(files, FLAGS.num_classes or None, FLAGS.frames_key,
                                   skip_corrupt_records=FLAGS.skip_corrupt_records)
    if not ratings:
        raise DataError(f"--data={FLAGS.data}: no record has segment ratings (segment_labels, "
                        "segment_start_times, segment_scores); expected segment-rated files")
    result = segment_map(submission, ratings, FLAGS.top_n)
    print(format_table(result, FLAGS.top_n))
    summary = {k: v for k, v in result.items() if k != "ap"}
    summary.update(top_n=FLAGS.top_n, submission=FLAGS.submission, data=FLAGS.data)
    print(json.dumps(summary, sort_keys=True))
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
