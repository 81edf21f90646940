"""bin/export: write a trained workdir's model as a SavedModel for TF Serving.

    bin/export --workdir=runs/late --export_dir=exports/late/1

TF Serving expects a numbered version directory under the model's base path;
serve it with the docker command in README.md.
"""
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "The workdir of a `train` run.")
    flags.DEFINE_string("export_dir", None, "Destination of the SavedModel (e.g. exports/mymodel/1).")
    flags.mark_flags_as_required(["workdir", "export_dir"])


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    from vt_keras import tasks
    from vt_keras.train import checkpoints

    config = checkpoints.load_config(FLAGS.workdir)
    task, model = tasks.restore_model(config, FLAGS.workdir)
    task.export(model, FLAGS.export_dir)
    print(f"exported {FLAGS.workdir} to {FLAGS.export_dir}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
