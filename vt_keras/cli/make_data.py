"""bin/make_data: write data with a planted structure, in the real record formats.

    bin/make_data --output_dir=data/yt8m                      # frame-level YouTube-8M records
    bin/make_data --output_dir=data/yt8m --num_videos=20000 --uncorrelated_fraction=0.2
    bin/make_data --kind=video_text --output_dir=data/howto   # clip/caption records

`yt8m` writes train/validate/test shards of frame-level SequenceExamples, the
same videos as video-level Examples in `video/` (`mean_rgb`, `mean_audio`),
segment ratings in the validation and test records (the 2019 challenge's
format) with `segment_classes.csv`, the label taxonomy (`taxonomy.json`) and
a `manifest.json`; see vt_keras/data/synthetic.py for the planted structure
and docs/yt8m_data.md for the formats. `video_text` writes clip/caption
records (docs/video_text_format.md).
"""
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum("kind", "yt8m", ["yt8m", "video_text"], "Which data to write.")
    flags.DEFINE_string("output_dir", None, "Directory to write into (created if missing).")
    flags.DEFINE_integer("num_videos", None, "Number of videos over all splits (default: the generator's).")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed writes byte-identical files.")
    flags.DEFINE_integer("num_shards", None, "Shards per split (default: the generator's).")
    flags.DEFINE_float("uncorrelated_fraction", None, "yt8m: fraction of videos whose audio comes from "
                       "a video of another top-level category.")
    flags.DEFINE_integer("max_frames", None, "yt8m: longest video in frames (one frame per second).")
    flags.DEFINE_bool("overwrite", False, "Write into a non-empty output_dir.")
    flags.mark_flag_as_required("output_dir")


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    import os

    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise common.ConfigError(f"--output_dir={FLAGS.output_dir} is a file; expected a directory")
    if os.path.isdir(FLAGS.output_dir) and os.listdir(FLAGS.output_dir) and not FLAGS.overwrite:
        raise common.ConfigError(f"--output_dir={FLAGS.output_dir} is not empty; pass --overwrite "
                                 "or choose an empty directory")
    kwargs = {"seed": FLAGS.seed}
    for name in ("num_videos", "num_shards"):
        if getattr(FLAGS, name) is not None:
            kwargs[name] = getattr(FLAGS, name)
    if FLAGS.kind == "yt8m":
        from vt_keras.data import synthetic

        if FLAGS.uncorrelated_fraction is not None:
            kwargs["uncorrelated_fraction"] = FLAGS.uncorrelated_fraction
        if FLAGS.max_frames is not None:
            kwargs["max_frames"] = FLAGS.max_frames
        synthetic.make_yt8m_data(FLAGS.output_dir, **kwargs)
    else:
        from vt_keras.data.video_text_synthetic import make_video_text_data

        make_video_text_data(FLAGS.output_dir, **kwargs)
    print(f"wrote {FLAGS.kind} data to {FLAGS.output_dir}:")
    for root, dirs, names in sorted(os.walk(FLAGS.output_dir)):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            print(f"  {os.path.relpath(path, FLAGS.output_dir):<46} {os.path.getsize(path) / 1e6:8.2f} MB")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
