"""Examples/s of the real trainer with `train.steps_per_loop` = 1 and N (host round trips per step).

`bin/train`'s own code path: the default late-fusion config on the embedded
default data (records read, checked and parsed by the input pipeline), one
device, `--steps` steps per run. Each run logs examples/s every
`--log_every` steps; the first window (it traces the step) is dropped and
the median of the others is reported. Runs alternate between the settings
for `--rounds` rounds, so that a change of machine load affects both alike.

    python bench/steps_per_loop.py                  # N = 1 and 20
    python bench/steps_per_loop.py --values 1,5,20 --json steps_per_loop.json
"""
import argparse
import json
import os
import platform
import re
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # as the binaries run


def run_once(steps_per_loop, steps, log_every, workdir, config_file):
    import tensorflow as tf

    from vt_keras import tasks
    from vt_keras.cli.common import load_config_file
    from vt_keras.tasks.yt8m import YT8MClassification

    config = load_config_file(config_file)
    YT8MClassification.prepare_config(config, log=lambda *a: None)
    config.train.num_steps = steps
    config.train.log_every = log_every
    config.train.checkpoint_every = 0
    config.train.steps_per_loop = steps_per_loop
    config.data.eval_pattern = config.data.train_pattern.replace("train-", "validate-")
    rates = []

    def log(line):
        m = re.search(r"examples/sec=([0-9.]+)", line)
        if m:
            rates.append(float(m.group(1)))

    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    tasks.train(config, workdir, strategy=tf.distribute.OneDeviceStrategy(device), log=log)
    return rates[1:]  # the first window traces the step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", default="1,20", help="comma-separated train.steps_per_loop values")
    parser.add_argument("--steps", type=int, default=400, help="training steps per run")
    parser.add_argument("--log_every", type=int, default=40, help="a multiple of every value")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default="configs/yt8m/late_fusion.py")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    values = [int(v) for v in args.values.split(",")]
    rates = {v: [] for v in values}
    load = os.getloadavg()
    for _ in range(args.rounds):
        for v in values:
            with tempfile.TemporaryDirectory() as workdir:
                rates[v] += run_once(v, args.steps, args.log_every, workdir, os.path.join(REPO, args.config))
    rows = []
    for v in values:
        r = np.asarray(rates[v])
        rows.append({"steps_per_loop": v, "examples_per_sec_median": float(np.median(r)),
                     "examples_per_sec_min": float(r.min()), "examples_per_sec_max": float(r.max()),
                     "windows": len(r)})
    base = rows[0]["examples_per_sec_median"]
    print(f"\n{args.config}, {args.steps} steps per run, {args.rounds} rounds, load average at start {load[0]:.1f}")
    print("| steps_per_loop | examples/s (median, min–max) | × N=" + str(values[0]) + " |\n|---|---|---|")
    for row in rows:
        row["speedup"] = row["examples_per_sec_median"] / base
        print(f"| {row['steps_per_loop']} | {row['examples_per_sec_median']:,.0f} "
              f"({row['examples_per_sec_min']:,.0f}–{row['examples_per_sec_max']:,.0f}) | {row['speedup']:.2f} |")
    if args.json:
        meta = {"config": args.config, "steps": args.steps, "rounds": args.rounds, "cpu_count": os.cpu_count(),
                "load_average_start": load, "load_average_end": os.getloadavg(), "platform": platform.platform(),
                "tensorflow": tf.__version__, "gpus": len(tf.config.list_logical_devices("GPU"))}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
