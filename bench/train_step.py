"""Training-step throughput of every YouTube-8M classifier variant.

One step is the trainer's own step (`vt_keras.train.step`: the task's
forward pass and multi-label cross-entropy, the backward pass and Adam's
update, under one `tf.function` on one device), on an in-memory batch of the
real shapes: rgb 1024 + audio 128 per frame, `--frames` frames
(100, the default data's maximum; 300 for YouTube-8M), 88 classes, a random
number of valid frames per video. Measured: the default config
(configs/yt8m/late_fusion.py) and every variant `<aggregator>_<fusion>` of
configs/yt8m/classifier.py with a learned aggregator (model sizes as in the
config file); the cm_* variants carry their frozen, here untrained,
correlation tower. The variants are compiled first and then
timed round-robin (`--rounds` × `--steps`), so that a change of machine load
affects all of them alike. Reports examples/s and, for each
cross-modal variant, its step time as a ratio to the late-fusion baseline of
the same aggregator. `--precisions` and `--jit_compile` measure each config
under every listed precision (`train.precision`) and XLA setting
(`train.jit_compile`); a setting a model cannot compile is reported, not
fatal.

    python bench/train_step.py                      # T = 100, batch 64
    python bench/train_step.py --precisions float32,mixed_bfloat16,mixed_float16 --jit_compile false,true
    python bench/train_step.py --frames 300 --json train_step_300.json
    python bench/train_step.py --configs netvlad_late,netvlad_cm_concat --steps 10
    python bench/train_step.py --configs pool_early,pool_late
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FEATURES = (("rgb", 1024), ("audio", 128))
DEFAULT_CONFIG = "late_fusion"


def config_names():
    """The default config, then every classifier variant with a learned aggregator."""
    from vt_keras.cli.common import load_config_module

    module = load_config_module(os.path.join(REPO, "configs/yt8m/classifier.py"))
    return [DEFAULT_CONFIG] + [f"{a}_{f}" for a in module.AGGREGATORS if a != "pool" for f in module.FUSIONS]


def config_file(name):
    """`late_fusion` is the default config's file; `<aggregator>_<fusion>` a variant of classifier.py."""
    if name == DEFAULT_CONFIG:
        return os.path.join(REPO, "configs/yt8m/late_fusion.py")
    aggregator, _, fusion = name.partition("_")
    return os.path.join(REPO, "configs/yt8m/classifier.py") + f":aggregator={aggregator},fusion={fusion}"


def make_batch(batch_size, frames, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(frames // 5, frames + 1, batch_size)
    mask = np.arange(frames)[None, :] < lengths[:, None]
    batch = {name: (rng.uniform(-2, 2, (batch_size, frames, dim)) * mask[..., None]).astype(np.float32)
             for name, dim in FEATURES}
    batch["mask"] = mask
    labels = np.zeros((batch_size, num_classes), np.float32)
    labels[np.arange(batch_size), rng.integers(0, num_classes, batch_size)] = 1.0
    return batch, labels


def build_step(name, batch_size, frames, num_classes, precision="float32", jit_compile=False):
    """The trainer's compiled step for config `name` under a precision and XLA setting, and its sizes."""
    import tensorflow as tf

    from vt_keras import tasks
    from vt_keras.cli.common import load_config_file
    from vt_keras.train import step as step_lib
    from vt_keras.train.schedules import build_optimizer

    config = load_config_file(config_file(name))
    config.data.features = FEATURES
    config.data.num_classes = num_classes
    config.data.max_frames = frames
    task = tasks.build_task(config)
    strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
    with step_lib.dtype_policy(precision), strategy.scope():
        model = task.build_model()
        optimizer = step_lib.wrap_optimizer(build_optimizer(config.optimizer), precision)
        optimizer.build(model.trainable_variables)
    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    replica_step = step_lib.make_replica_step(task, model, optimizer, counter, global_batch_size=batch_size,
                                              num_replicas=1, jit_compile=jit_compile)
    inputs, labels = make_batch(batch_size, frames, num_classes)
    batch = {k: tf.constant(v) for k, v in inputs.items()}
    batch["labels"] = tf.constant(labels)

    @tf.function
    def step():
        loss, _, _ = strategy.run(replica_step, args=(batch, tf.constant(0.0)))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

    label = name if (precision, jit_compile) == ("float32", False) else \
        f"{name} [{precision}{', XLA' if jit_compile else ''}]"
    return step, {"config": name, "label": label, "precision": precision, "jit_compile": jit_compile,
                  "params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                  "frozen_params": int(sum(np.prod(v.shape) for v in model.non_trainable_variables)),
                  "device": strategy.extended.worker_devices[0],
                  # Where the variables really live (checked, not assumed from the strategy).
                  "variable_device": model.trainable_variables[0].value.device}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=100, help="T; 300 as in YouTube-8M")
    parser.add_argument("--num_classes", type=int, default=88)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the variants (median "
                        "of all timed steps reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first one traces)")
    parser.add_argument("--configs", default="", help="comma-separated config names (default: all)")
    parser.add_argument("--precisions", default="float32", help="comma-separated train.precision values")
    parser.add_argument("--jit_compile", default="false", help="comma-separated train.jit_compile values")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per variant is intended, not "retracing"

    names = [n for n in args.configs.split(",") if n] or config_names()
    settings = [(p, j.strip().lower() == "true") for p in args.precisions.split(",") for j in args.jit_compile.split(",")]
    load = os.getloadavg()
    steps, rows, times, failures = {}, [], {}, []
    for name in names:
        for precision, jit in settings:
            start = time.perf_counter()
            try:
                step, row = build_step(name, args.batch_size, args.frames, args.num_classes, precision, jit)
                for _ in range(args.warmup):
                    float(step())
            except Exception as e:  # noqa: BLE001  (a setting that cannot run is a result, not a crash)
                error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
                print(f"{name} [{precision}{', XLA' if jit else ''}]: cannot run ({error})", flush=True)
                failures.append({"config": name, "precision": precision, "jit_compile": jit, "error": error})
                continue
            row["trace_and_warmup_seconds"] = time.perf_counter() - start
            steps[row["label"]] = step
            rows.append(row)
            times[row["label"]] = []
    # Round robin, so that a change of machine load hits every variant alike.
    for _ in range(args.rounds):
        for row in rows:
            for _ in range(args.steps):
                start = time.perf_counter()
                float(steps[row["label"]]())
                times[row["label"]].append(time.perf_counter() - start)
    for row in rows:
        t = np.asarray(times[row["label"]])
        row.update(step_seconds_median=float(np.median(t)), step_seconds_min=float(t.min()),
                   step_seconds_max=float(t.max()), examples_per_sec=args.batch_size / float(np.median(t)))
        print(f"{row['label']:<44} {row['examples_per_sec']:9.1f} ex/s  {1000 * row['step_seconds_median']:9.1f} "
              f"ms/step (min {1000 * row['step_seconds_min']:.1f}, max {1000 * row['step_seconds_max']:.1f})",
              flush=True)
    by_key = {(r["config"], r["precision"], r["jit_compile"]): r for r in rows}
    for r in rows:
        agg, _, fusion = r["config"].partition("_")
        base = by_key.get((f"{agg}_late", r["precision"], r["jit_compile"]))
        if fusion.startswith("cm_") and base:
            r["step_time_vs_late"] = r["step_seconds_median"] / base["step_seconds_median"]

    print(f"\nbatch {args.batch_size}, T = {args.frames}, {args.num_classes} classes, "
          f"{len(tf.config.list_logical_devices('GPU')) or 'no'} GPU, {os.cpu_count()} CPU cores, "
          f"load average at start {load[0]:.1f}")
    print("| config | precision | XLA | params | examples/s | ms/step (min–max) | × late |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['step_time_vs_late']:.2f}" if "step_time_vs_late" in r else ""
        print(f"| {r['config']} | {r['precision']} | {'yes' if r['jit_compile'] else 'no'} | {r['params']:,} | "
              f"{r['examples_per_sec']:.1f} | {1000 * r['step_seconds_median']:.0f} "
              f"({1000 * r['step_seconds_min']:.0f}–{1000 * r['step_seconds_max']:.0f}) | {ratio} |")
    if args.json:
        meta = {"batch_size": args.batch_size, "frames": args.frames, "num_classes": args.num_classes,
                "steps": args.steps, "rounds": args.rounds, "cpu_count": os.cpu_count(), "load_average_start": load,
                "load_average_end": os.getloadavg(), "platform": platform.platform(),
                "tensorflow": tf.__version__, "gpus": len(tf.config.list_logical_devices("GPU"))}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows, "failures": failures}, f, indent=2)


if __name__ == "__main__":
    main()
