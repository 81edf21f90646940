"""bin/evaluate: evaluate a trained workdir on any split and print the metrics table.

    bin/evaluate --workdir=runs/late --data='data/test-*.tfrecord'
    bin/evaluate --workdir=runs/late            # the config's validation split

Prints the task's metrics (for YouTube-8M: GAP, MAP, PERR, Hit@1 and their
error rates, overall and per taxonomy level) and writes them as JSON.
"""
import json
import os
import sys

from absl import flags

from vt_keras.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "The workdir of a `train` run (holds config.json and checkpoints).")
    flags.DEFINE_string("data", None, "File pattern of the records to evaluate (comma-separated patterns "
                        "allowed). Default: the config's data.eval_pattern.")
    flags.DEFINE_string("taxonomy", None, "taxonomy.json for per-level metrics (default: the config's, "
                        "or taxonomy.json beside the data).")
    flags.DEFINE_string("output", None, "Where to write the JSON (default: <workdir>/eval_metrics.json).")
    flags.DEFINE_bool("skip_corrupt_records", False, "Skip corrupt records and report how many.")
    flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    # Imported here, not at the top: --help and flag errors answer without loading TensorFlow.
    from vt_keras import tasks
    from vt_keras.train import checkpoints

    config = checkpoints.load_config(FLAGS.workdir)
    if FLAGS.taxonomy is not None:
        config.data.taxonomy = FLAGS.taxonomy
    if FLAGS.skip_corrupt_records:
        config.data.skip_corrupt_records = True
    pattern = FLAGS.data or config.data.eval_pattern
    task, model = tasks.restore_model(config, FLAGS.workdir)
    results = task.evaluate(model, pattern)
    print(task.format_results(results))
    output = FLAGS.output or os.path.join(FLAGS.workdir, "eval_metrics.json")
    with open(output, "w") as f:
        json.dump({"data": pattern, **results}, f, indent=2, sort_keys=True)
    print(f"\nwrote {output}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
