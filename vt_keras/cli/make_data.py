"""bin/make_data: write data with a planted structure, in the real record formats.

    bin/make_data --output_dir=data/yt8m                      # frame-level YouTube-8M records
    bin/make_data --output_dir=data/yt8m --num_videos=20000 --uncorrelated_fraction=0.2
    bin/make_data --kind=video_text --output_dir=data/howto   # clip/caption records

`yt8m` writes train/validate/test shards of frame-level SequenceExamples, the
label taxonomy (`taxonomy.json`) and a `manifest.json`; see
vt_keras/data/synthetic.py for the planted structure. `video_text` writes
clip/caption records (docs/video_text_format.md).
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
        from vt_keras.data import video_text

        video_text.make_video_text_data(FLAGS.output_dir, **kwargs)
    print(f"wrote {FLAGS.kind} data to {FLAGS.output_dir}:")
    for name in sorted(os.listdir(FLAGS.output_dir)):
        size = os.path.getsize(os.path.join(FLAGS.output_dir, name))
        print(f"  {name:<40} {size / 1e6:8.2f} MB")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
