"""Real YouTube-8M sizes end to end: peak memory (RSS) and examples/s of training, export and prediction.

    python bench/real_sizes.py                 # real sizes, then the small config, each in its own process
    python bench/real_sizes.py --steps=8 --records=96

The real sizes are the paper's NetVLAD classifier on the released data's
shapes: 3,862 classes, 300 frames of rgb 1024 + audio 128, NetVLAD with 128
video and 64 audio clusters, hidden size 1,024, batch 32
(`configs/yt8m/classifier.py:aggregator=netvlad` with overrides). The small
config is the same file's defaults on the embedded data's shapes (88
classes, 100 frames, 32 and 16 clusters, hidden 512), batch 32 too. Records
are written once per setting (random frames, one to three labels).

Each setting runs in a fresh process, so its peak RSS
(`ru_maxrss`) is its own: `bin/train`'s work (`vt_keras.tasks.train`,
checkpoint included), then the export, then `bin/predict`'s loop over the
records through the SavedModel's `serving_default`. Training examples/s is
the median over the logged steps after the first (which traces the step);
prediction examples/s counts every record, the first call's tracing
included.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    "real": dict(num_classes=3862, max_frames=300, video_clusters=128, audio_clusters=64, hidden_size=1024),
    "small": dict(num_classes=88, max_frames=100, video_clusters=32, audio_clusters=16, hidden_size=512),
}
BATCH = 32


def write_records(directory, setting, count, seed=0):
    import numpy as np

    from vt_keras.data.yt8m_writers import write_frame_records

    rng = np.random.default_rng(seed)
    frames = setting["max_frames"]
    examples = [{"id": f"v{i:05d}", "labels": sorted(set(rng.integers(0, setting["num_classes"], 3).tolist()))[
                 :int(rng.integers(1, 4))],
                 "rgb": rng.uniform(-2, 2, (frames, 1024)), "audio": rng.uniform(-2, 2, (frames, 128))}
                for i in range(count)]
    path = os.path.join(directory, "train-00000-of-00001.tfrecord")
    write_frame_records(path, examples)
    return path


def config_for(setting, pattern, steps):
    from vt_keras.cli.common import load_config_file

    c = load_config_file("configs/yt8m/classifier.py:aggregator=netvlad")
    c.data.update(train_pattern=pattern, eval_pattern=pattern, num_classes=setting["num_classes"],
                  max_frames=setting["max_frames"], taxonomy="")
    c.model.video_aggregator.num_clusters = setting["video_clusters"]
    c.model.audio_aggregator.num_clusters = setting["audio_clusters"]
    c.model.hidden_size = setting["hidden_size"]
    c.train.update(batch_size=BATCH, num_steps=steps, log_every=1, checkpoint_every=0)
    c.eval.batch_size = BATCH
    return c


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(name, records, steps):
    """Trains, exports and predicts one setting in this process; prints one JSON line."""
    import statistics

    from vt_keras import tasks
    from vt_keras.cli.predict import predict_files
    from vt_keras.train.strategy import create_strategy

    setting = SETTINGS[name]
    directory = tempfile.mkdtemp(prefix="vt_keras_real_sizes_")
    try:
        pattern = write_records(directory, setting, records)
        config = config_for(setting, pattern, steps)
        rates = []

        def log(line):
            if line.startswith("step ") and "examples/sec=" in line:
                rates.append(float(line.rsplit("examples/sec=", 1)[1]))

        task = tasks.build_task(config)
        t0 = time.perf_counter()
        _, model = tasks.train(config, os.path.join(directory, "w"), strategy=create_strategy("one"), log=log,
                               task=task)
        train_s = time.perf_counter() - t0
        train_rss = peak_rss_mib()
        t0 = time.perf_counter()
        export_dir = task.export(model, os.path.join(directory, "export"))
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = sum(1 for _ in predict_files(export_dir, [pattern], BATCH, log=lambda *a: None))
        predict_s = time.perf_counter() - t0
        print(json.dumps({
            "setting": name, **setting, "batch": BATCH, "parameters": int(model.count_params()),
            "train_steps": steps, "train_examples_per_s": statistics.median(rates[1:]), "train_s": train_s,
            "train_peak_rss_mib": train_rss, "export_s": export_s, "predicted": rows,
            "predict_examples_per_s": rows / predict_s, "peak_rss_mib": peak_rss_mib()}))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="training steps per setting (>= 3)")
    parser.add_argument("--records", type=int, default=64, help="records written per setting")
    parser.add_argument("--settings", default="real,small", help="comma-separated: real, small")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process of one setting
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.records, args.steps)
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO_ROOT)
    results = []
    for name in args.settings.split(","):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--one={name}", f"--steps={args.steps}",
                               f"--records={args.records}"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        if proc.returncode:
            sys.exit(f"{name}: failed\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'setting':<8}{'classes':>8}{'frames':>7}{'clusters':>10}{'hidden':>7}{'parameters':>13}"
          f"{'train ex/s':>11}{'predict ex/s':>13}{'peak RSS MiB':>13}{'train RSS MiB':>14}")
    for r in results:
        print(f"{r['setting']:<8}{r['num_classes']:>8}{r['max_frames']:>7}"
              f"{str(r['video_clusters']) + '+' + str(r['audio_clusters']):>10}{r['hidden_size']:>7}"
              f"{r['parameters']:>13,}{r['train_examples_per_s']:>11.1f}{r['predict_examples_per_s']:>13.1f}"
              f"{r['peak_rss_mib']:>13,.0f}{r['train_peak_rss_mib']:>14,.0f}")
    print(json.dumps(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "load_average_end": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
