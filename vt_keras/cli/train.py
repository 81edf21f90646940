r"""bin/train: train a config into a workdir, evaluate it, export it.

With no flags this is the library's main job: it generates the embedded
default data once (a cache directory), trains the default late-fusion
YouTube-8M config for a few minutes on CPU, evaluates on the validation
split beside the label-frequency baseline, exports a SavedModel for TF
Serving, and prints where everything went.

    bin/train
    bin/train --config=configs/yt8m/classifier.py:aggregator=netvlad,fusion=cm_concat --workdir=runs/nv_cmc \
        --config.model.tower_workdir=runs/tower \
        --config.train.batch_size=128 --strategy=mirrored
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \
        bin/train --config=... --workdir=... --strategy=multi_worker

Re-running the same command after a crash resumes from the latest checkpoint.
"""
import json
import os
import sys

from absl import flags, logging

from vt_keras.cli import common

DEFAULT_CONFIG = "configs/yt8m/late_fusion.py"
FLAGS = flags.FLAGS


def define_flags():
    common.config_flag(default=DEFAULT_CONFIG)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs, config.json, "
                        "metrics.json and the export. Default: workdirs/<config file name>.")
    flags.DEFINE_enum("strategy", "auto", ["auto", "one", "mirrored", "multi_worker"],
                      "Distribution strategy; auto picks multi_worker from TF_CONFIG, mirrored with "
                      "several GPUs or --num_cpu_devices>1, else one device.")
    flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many logical devices "
                         "(to run the multi-replica path without GPUs).")
    flags.DEFINE_bool("export", True, "Export a SavedModel to <workdir>/export after training.")
    flags.DEFINE_bool("skip_corrupt_records", False, "Skip corrupt TFRecords (and report how many) "
                      "instead of stopping with the file's name.")
    flags.DEFINE_bool("baseline", None, "Also print the label-frequency baseline (default: on for the "
                      "embedded default data).")


def default_workdir(config_path):
    """`workdirs/<config file name>[_<variant values>]`: `classifier.py:aggregator=rnn,fusion=late` → classifier_rnn_late."""
    name, _, arg = config_path.partition(":")
    parts = [os.path.splitext(os.path.basename(name))[0]]
    parts += [item.partition("=")[2] or item for item in arg.split(",") if item.strip()]
    return os.path.join("workdirs", "_".join(p.strip().replace(os.sep, "-") for p in parts))


def train_one(config, workdir, strategy, log=print):
    """Trains one config with one task object (the one that trains is the one that exports)."""
    from vt_keras import tasks
    from vt_keras.train import loop, strategy as strategy_lib

    task = tasks.build_task(config)
    results, model = loop.train(task, workdir, strategy=strategy, log=log)
    export_dir = None
    if FLAGS.export and strategy_lib.is_chief(strategy):
        export_dir = task.export(model, os.path.join(workdir, "export"))
    return task, results, export_dir


def check_workdir(workdir):
    """A workdir must be a directory or not exist yet; a regular file there is a mistake."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise common.ConfigError(f"--workdir={workdir} is a file; expected a directory (existing or new) for "
                                 "checkpoints, config.json and metrics.json")


def main(argv):
    if len(argv) > 1:
        raise common.ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    # TensorFlow is imported here, not at the top: flag and config mistakes and --help
    # answer in a fraction of a second without it.
    from vt_keras.train import loop, strategy as strategy_lib

    config = common.checked_config(FLAGS["config"])
    config_path = FLAGS["config"].config_filename
    workdir = FLAGS.workdir or default_workdir(config_path)
    check_workdir(workdir)
    if FLAGS.skip_corrupt_records:
        if "data" not in config or "skip_corrupt_records" not in config.data:
            raise common.ConfigError(
                f"--skip_corrupt_records: the config {config_path} (task {config.get('task')!r}) reads no record "
                "files that could be corrupt (it has no data.skip_corrupt_records); drop the flag")
        config.data.skip_corrupt_records = True
    strategy = strategy_lib.create_strategy(FLAGS.strategy, FLAGS.num_cpu_devices)
    import vt_keras.tasks  # noqa: F401  (registers the tasks)
    from vt_keras.train.task import TASKS

    task_cls = TASKS.get(config.get("task", None), key="task")
    uses_default_data = task_cls.prepare_config(config, log=print)
    logging.set_verbosity(logging.WARNING)

    sweep = config.get("sweep", None)
    if sweep:
        from vt_keras.cli.sweep import run_sweep

        run_sweep(config, workdir, strategy, train_one)
        return 0
    task, results, export_dir = train_one(config, workdir, strategy)
    if not strategy_lib.is_chief(strategy):
        return 0
    print()
    print(f"workdir     {os.path.abspath(workdir)}")
    print(f"config      {os.path.join(os.path.abspath(workdir), 'config.json')}")
    print(f"checkpoints {os.path.join(os.path.abspath(workdir), 'checkpoints')}")
    print(f"tensorboard tensorboard --logdir {os.path.abspath(workdir)}")
    print(f"metrics     {os.path.join(os.path.abspath(workdir), loop.METRICS_FILE)}")
    if export_dir:
        print(f"export      {os.path.abspath(export_dir)}")
    print()
    show_baseline = FLAGS.baseline if FLAGS.baseline is not None else uses_default_data
    baseline = None
    if show_baseline:
        baseline = task.baseline(config.data.train_pattern, config.data.eval_pattern)
    if baseline is not None:
        with open(os.path.join(workdir, "baseline_metrics.json"), "w") as f:
            json.dump(baseline, f, indent=2, sort_keys=True)
    print(task.format_results(results, baseline=baseline))
    return 0


def run():
    common.run(main, define_flags, default_config=DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(run())
