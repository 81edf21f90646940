r"""bin/convert_features: features of your own videos (MediaPipe's YouTube-8M extractor) as YouTube-8M records.

    bin/convert_features --input='features/*.pb' --output=mine.tfrecord                 # frame level
    bin/convert_features --input=features/holiday.pb --output=mine_video.tfrecord --video_level

The input: what MediaPipe's YouTube-8M feature extractor writes, one
`tf.train.SequenceExample` per video as a bare serialized proto file or in a
TFRecord file (one or many files, globs), with float feature lists
`RGB/feature/floats` (1024 per frame) and `AUDIO/feature/floats` (128 per
frame). The output: one TFRecord file of standard YouTube-8M records, frame
level (`rgb`, `audio` quantized exactly as the released data) or, with
`--video_level`, video level (`mean_rgb`, `mean_audio`: the means of the
dequantized frames), each with an empty label list. At most `--max_frames`
frames are kept (the first; YouTube-8M videos have at most 300). The id is
`--video_id` or the input file's name without extension.

Then predict with any export: `bin/predict --export_dir=... --data=mine.tfrecord --output=mine.csv`
(a frame-level export for frame-level records, a video-level export for `--video_level`).
See vt_keras/data/mediapipe.py and docs/yt8m_data.md.
"""
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("input", None, "The extractor's output: a file, a glob, or several separated by commas "
                        "(bare serialized SequenceExamples or TFRecord files of them).")
    flags.DEFINE_string("output", None, "The TFRecord file to write.")
    flags.DEFINE_bool("video_level", False, "Write video-level Examples (mean_rgb, mean_audio) instead of "
                      "frame-level SequenceExamples.")
    flags.DEFINE_string("video_id", None, "The id of the video (one input video only). Default: the file name.")
    flags.DEFINE_string("rgb_key", "RGB/feature/floats", "The extractor's feature list of visual features.")
    flags.DEFINE_string("audio_key", "AUDIO/feature/floats", "The extractor's feature list of audio features.")
    flags.DEFINE_integer("max_frames", 300, "Frames kept per video (the first ones).")
    flags.mark_flags_as_required(["input", "output"])


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    from vt_keras.data.mediapipe import convert_features
    from vt_keras.errors import DataError

    keys = ((FLAGS.rgb_key, "rgb"), (FLAGS.audio_key, "audio"))
    try:
        written = convert_features(FLAGS.input, FLAGS.output, FLAGS.video_level, FLAGS.video_id, keys,
                                   FLAGS.max_frames)
    except DataError as e:
        if str(e).startswith("file pattern"):
            raise DataError(f"--input={FLAGS.input}: {e}") from None
        raise
    level = "video-level" if FLAGS.video_level else "frame-level"
    for video_id, frames in written:
        print(f"  {video_id}: {frames} frames")
    print(f"wrote {len(written)} {level} record(s) to {FLAGS.output}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
