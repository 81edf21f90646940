"""bin/export: write a trained workdir's model as a SavedModel for TF Serving.

    bin/export --workdir=runs/late --export_dir=exports/late/1

TF Serving expects a numbered version directory under the model's base path;
serve it with the docker command in README.md. An existing, non-empty
`--export_dir` (an export TF Serving may be serving) is never overwritten
unless `--overwrite` is given: write the new model as the next version.
"""
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "The workdir of a `train` run.")
    flags.DEFINE_string("export_dir", None, "Destination of the SavedModel (e.g. exports/mymodel/1).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing export in --export_dir.")
    flags.mark_flags_as_required(["workdir", "export_dir"])


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    import tensorflow as tf

    from vt_keras import tasks
    from vt_keras.train import checkpoints

    if tf.io.gfile.exists(FLAGS.export_dir):
        if not tf.io.gfile.isdir(FLAGS.export_dir):
            raise common.ConfigError(f"--export_dir={FLAGS.export_dir} is a file; expected a directory to write "
                                     "the SavedModel into")
        if tf.io.gfile.listdir(FLAGS.export_dir) and not FLAGS.overwrite:
            raise common.ConfigError(f"--export_dir={FLAGS.export_dir} is not empty; expected a new version "
                                     "directory (e.g. exports/model/2), or pass --overwrite to replace it")
    config = checkpoints.load_config(FLAGS.workdir)
    task, model = tasks.restore_model(config, FLAGS.workdir)
    task.export(model, FLAGS.export_dir)
    print(f"exported {FLAGS.workdir} to {FLAGS.export_dir}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
