"""Every benchmark of the project in one run: one JSON file and one markdown report.

    python bench/run_all.py --output_dir=bench_results           # everything (about 20 minutes on 2 CPU cores)
    python bench/run_all.py --quick --output_dir=bench_results   # under 10 minutes on 2 CPU cores

Writes `results.json` (the machine, then each benchmark's own JSON) and
`results.md` (the machine, then one table per benchmark, as README's
Performance section shows them) into `--output_dir`, and each benchmark's
console output beside them (`<name>.log`). Each benchmark runs in its own
process, one after the other, so none measures beside another; within a
benchmark the variants take turns (see each script's docstring), and every
figure is a median with its spread.

The benchmarks (`--only` picks some, comma-separated):

- `input_pipeline`: `bench/input_pipeline.py --bfc_allocator` (frame-level
  readers against the raw read rate and the starter code's reader design);
- `train_step`: `bench/train_step.py` at T = 100 for every config under
  every precision and XLA setting (`--quick`: the float32 configs with
  and without XLA and a few under mixed_bfloat16), and the Transformer
  configs at T = 300;
- `steps_per_loop`: `bench/steps_per_loop.py` (`bin/train`'s code path,
  N = 1 against N = 20);
- `soft_dtw`: `bench/soft_dtw.py` (our kernel against the published
  packages that are installed);
- `real_sizes`: `bench/real_sizes.py` (peak memory and examples/s of
  training and prediction at YouTube-8M's sizes; not in `--quick`).

On a machine with a GPU nothing changes on the command line: the machine
description lists the GPUs TensorFlow sees, a probe checks that an op placed
on the first one really ran there, and the step benchmarks report the device
their model's variables live on.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")

ALL = ("input_pipeline", "train_step", "train_step_300", "steps_per_loop", "soft_dtw", "real_sizes")
QUICK = ALL[:-1]  # real_sizes needs several GiB and minutes per setting: full runs only
# T = 300 measures the Transformers only: the other aggregators' ratio to late fusion does not grow with T.
TRANSFORMERS = "transformer_late,transformer_cm_gated,transformer_cm_concat,transformer_early"
QUICK_CONFIGS = ("late_fusion,rnn_late,rnn_cm_gated,netvlad_late,netvlad_cm_concat," + TRANSFORMERS)


def commands(quick):
    """`{name: argv}` of every benchmark (the `--json` path is added by `run`)."""
    py = sys.executable
    if quick:
        return {
            # The full 2,000 records (about a minute): with 500 the readers' ranking is not stable.
            "input_pipeline": [py, f"{BENCH}/input_pipeline.py", "--bfc_allocator"],
            "train_step": [py, f"{BENCH}/train_step.py", "--configs", QUICK_CONFIGS, "--jit_compile", "false,true",
                           "--rounds", "2", "--steps", "2", "--warmup", "1"],
            "train_step_300": [py, f"{BENCH}/train_step.py", "--frames", "300", "--configs", TRANSFORMERS,
                               "--rounds", "2", "--steps", "1", "--warmup", "1"],
            "steps_per_loop": [py, f"{BENCH}/steps_per_loop.py", "--steps", "200", "--rounds", "1"],
            "soft_dtw": [py, f"{BENCH}/soft_dtw.py", "--quick"],
        }
    return {
        "input_pipeline": [py, f"{BENCH}/input_pipeline.py", "--bfc_allocator"],
        "train_step": [py, f"{BENCH}/train_step.py", "--precisions", "float32,mixed_bfloat16,mixed_float16",
                       "--jit_compile", "false,true"],
        "train_step_300": [py, f"{BENCH}/train_step.py", "--frames", "300", "--configs", TRANSFORMERS,
                           "--precisions", "float32,mixed_bfloat16", "--jit_compile", "false,true"],
        "steps_per_loop": [py, f"{BENCH}/steps_per_loop.py"],
        "soft_dtw": [py, f"{BENCH}/soft_dtw.py"],
        "real_sizes": [py, f"{BENCH}/real_sizes.py"],
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def describe_machine():
    """CPU, cores, memory, GPUs (with a placement probe), versions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"name": details.get("device_name", device.name),
                     "compute_capability": details.get("compute_capability")})
    probe = None
    if gpus:
        # Checked, not assumed: the product must have been computed on the GPU.
        with tf.device("/GPU:0"):
            x = tf.matmul(tf.ones([64, 64]), tf.ones([64, 64]))
        probe = {"op_device": x.device, "on_gpu": "GPU" in x.device.upper(), "value_ok": bool(x[0, 0] == 64.0)}
    return {
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "memory_gib": memory_gib(),
        "gpus": gpus, "gpu_probe": probe, "platform": platform.platform(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
        "load_average_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def run(name, argv, output_dir):
    """Runs one benchmark; returns its JSON (or an error record)."""
    path = os.path.join(output_dir, f"{name}.json")
    log_path = os.path.join(output_dir, f"{name}.log")
    start = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(os.path.relpath(a, REPO) if a.startswith(REPO) else a for a in argv[1:])}",
          flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(argv + ["--json", path], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not os.path.exists(path):
        print(f"  failed (exit {proc.returncode}) after {seconds:.0f} s; see {log_path}", flush=True)
        return {"error": f"exit {proc.returncode}", "log": log_path, "seconds": seconds}
    with open(path) as f:
        result = json.load(f)
    print(f"  done in {seconds:.0f} s", flush=True)
    return {"seconds": seconds, "result": result}


def fmt(value, digits=0):
    return f"{value:,.{digits}f}"


def md_machine(m):
    gpu = ", ".join(g["name"] for g in m["gpus"]) or "none"
    if m["gpu_probe"]:
        gpu += f" (probe op ran on {m['gpu_probe']['op_device']})"
    mem = f"{m['memory_gib']:.0f} GiB" if m["memory_gib"] else "unknown memory"
    return (f"{m['cpu']}, {m['cpu_cores']} cores, {mem}; GPU: {gpu}; {m['platform']}; Python {m['python']}, "
            f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, NumPy {m['numpy']}; load average at start "
            f"{m['load_average_start'][0]:.1f}; {m['date']}")


def md_input_pipeline(r):
    lines = [f"{r['num_records']:,} records of {r['frames']} frames ({r['size_mib']:.0f} MiB, page cache), batch "
             f"{r['batch_size']}, BFC allocator {'on' if r['bfc_allocator'] else 'off'}",
             "", "| reader | examples/s (median, min–max) | × raw | CPU ms per batch (all threads) |",
             "|---|---|---|---|"]
    for row in r["results"]:
        spread = (f" ({fmt(row['examples_per_s_min'])}–{fmt(row['examples_per_s_max'])})"
                  if "examples_per_s_min" in row else "")
        cpu = f"{row['cpu_ms_per_batch']:.1f}" if "cpu_ms_per_batch" in row else ""
        lines.append(f"| {row['reader']} | {fmt(row['examples_per_s'])}{spread} | {row['ratio_to_raw']:.2f} | {cpu} |")
    if "seconds_per_graph_node" in r:
        lines += ["", "Cost per graph node of one function call (a chain of trivial ops): " + ", ".join(
            f"{name} {1e6 * v:.2f} µs" for name, v in r["seconds_per_graph_node"].items())]
    return lines


def md_train_step(r):
    meta = r["meta"]
    lines = [f"batch {meta['batch_size']}, T = {meta['frames']}, {meta['num_classes']} classes, "
             f"{meta['rounds']} × {meta['steps']} timed steps per variant in alternation",
             "", "| config | precision | XLA | device | examples/s | ms/step (min–max) | × late |",
             "|---|---|---|---|---|---|---|"]
    for row in r["results"]:
        ratio = f"{row['step_time_vs_late']:.2f}" if "step_time_vs_late" in row else ""
        lines.append(
            f"| {row['config']} | {row['precision']} | {'yes' if row['jit_compile'] else 'no'} | "
            f"{row.get('variable_device', row.get('device', '')).split('device:')[-1]} | "
            f"{fmt(row['examples_per_sec'], 1)} | "
            f"{fmt(1000 * row['step_seconds_median'])} ({fmt(1000 * row['step_seconds_min'])}–"
            f"{fmt(1000 * row['step_seconds_max'])}) | {ratio} |")
    for failure in r.get("failures", []):
        lines.append(f"| {failure['config']} | {failure['precision']} | {'yes' if failure['jit_compile'] else 'no'}"
                     f" | | cannot run: {failure['error']} | | |")
    return lines + [""] + md_step_grid(r)


def md_step_grid(r):
    """The same figures in one row per config: ms/step per precision and XLA setting, × late at each."""
    settings, grid = [], {}
    for row in r["results"]:
        key = (row["precision"], bool(row["jit_compile"]))
        if key not in settings:
            settings.append(key)
        ratio = f" ({row['step_time_vs_late']:.2f})" if "step_time_vs_late" in row else ""
        grid.setdefault(row["config"], {})[key] = f"{fmt(1000 * row['step_seconds_median'])}{ratio}"
    names = [f"{p}{', XLA' if jit else ''}" for p, jit in settings]
    lines = ["ms/step (median) per precision and XLA setting; in brackets, × the late fusion of the same "
             "aggregator at the same setting:", "", "| config | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for config, cells in grid.items():
        lines.append(f"| {config} | " + " | ".join(cells.get(k, "") for k in settings) + " |")
    return lines


def md_steps_per_loop(r):
    meta = r["meta"]
    lines = [f"{meta['config']}, {meta['steps']} steps per run, {meta['rounds']} round(s)", "",
             "| steps_per_loop | examples/s (median, min–max) | × N=1 |", "|---|---|---|"]
    for row in r["results"]:
        lines.append(f"| {row['steps_per_loop']} | {fmt(row['examples_per_sec_median'])} "
                     f"({fmt(row['examples_per_sec_min'])}–{fmt(row['examples_per_sec_max'])}) | "
                     f"{row['speedup']:.2f} |")
    return lines


def md_soft_dtw(r):
    versions = r.get("machine", {}).get("versions", {})
    missing = [k for k, v in versions.items() if v is None]
    lines = ["forward + backward, γ = 0.1; peers not installed: " + (", ".join(missing) or "none")
             + " (`pip install -e '.[bench]'`, see bench/soft_dtw.py)", "",
             "| case | implementation | wall s (median) | wall s (min) |", "|---|---|---|---|"]
    for case, impls in r.items():
        if case in ("machine", "agreement_64x300x300") or not isinstance(impls, dict):
            continue
        for impl, value in impls.items():
            if isinstance(value, dict) and "wall_median_s" in value:
                lines.append(f"| {case} | {impl} | {value['wall_median_s']:.4f} | {value['wall_min_s']:.4f} |")
    for row in r.get("scaling", []):
        lines.append(f"| scaling N={row['n']}, {row['pairs']} pairs ({row['peak_rss_growth_mb']:.0f} MB peak) | "
                     f"{row['implementation']} | {row['wall_median_s']:.4f} | {row['wall_min_s']:.4f} |")
    return lines


def md_real_sizes(r):
    lines = ["| setting | classes | frames | parameters | train ex/s | predict ex/s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for row in r["results"]:
        lines.append(f"| {row['setting']} | {row['num_classes']:,} | {row['max_frames']} | {row['parameters']:,} | "
                     f"{row['train_examples_per_s']:.1f} | {row['predict_examples_per_s']:.1f} | "
                     f"{row['peak_rss_mib']:,.0f} |")
    return lines


RENDER = {"input_pipeline": md_input_pipeline, "train_step": md_train_step, "train_step_300": md_train_step,
          "steps_per_loop": md_steps_per_loop, "soft_dtw": md_soft_dtw, "real_sizes": md_real_sizes}
TITLES = {"input_pipeline": "Input pipeline", "train_step": "Training step, T = 100",
          "train_step_300": "Training step, T = 300 (Transformers)", "steps_per_loop": "Steps per loop",
          "soft_dtw": "Soft-DTW", "real_sizes": "Real YouTube-8M sizes"}


def markdown(machine, results, quick):
    lines = [f"# Benchmarks{' (--quick)' if quick else ''}", "", md_machine(machine), ""]
    for name, entry in results.items():
        lines += [f"## {TITLES[name]}", ""]
        if "error" in entry:
            lines += [f"failed ({entry['error']}); see {os.path.basename(entry['log'])}", ""]
            continue
        lines += RENDER[name](entry["result"]) + ["", f"({entry['seconds']:.0f} s)", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="bench_results", help="where results.json, results.md and logs go")
    parser.add_argument("--quick", action="store_true", help="smaller runs: under 10 minutes on 2 CPU cores")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(ALL)}")
    parser.add_argument("--render", action="store_true", help="rewrite results.md of --output_dir from its "
                        "results.json, running nothing")
    args = parser.parse_args()
    if args.render:
        with open(os.path.join(args.output_dir, "results.json")) as f:
            saved = json.load(f)
        report = markdown(saved["machine"], saved["benchmarks"], saved["quick"])
        with open(os.path.join(args.output_dir, "results.md"), "w") as f:
            f.write(report + "\n")
        print(report)
        return
    names = [n for n in args.only.split(",") if n] or list(QUICK if args.quick else ALL)
    unknown = [n for n in names if n not in (QUICK if args.quick else ALL)]
    if unknown:
        parser.error(f"--only={args.only}: unknown benchmark(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join(QUICK if args.quick else ALL)}")
    os.makedirs(args.output_dir, exist_ok=True)
    machine = describe_machine()
    print(md_machine(machine), flush=True)
    if machine["gpu_probe"] and not machine["gpu_probe"]["on_gpu"]:
        print(f"warning: TensorFlow lists a GPU but the probe op ran on {machine['gpu_probe']['op_device']}",
              flush=True)
    argvs = commands(args.quick)
    start = time.perf_counter()
    results = {name: run(name, argvs[name], args.output_dir) for name in names}
    machine["load_average_end"] = os.getloadavg()
    machine["total_seconds"] = time.perf_counter() - start
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({"machine": machine, "quick": args.quick, "benchmarks": results}, f, indent=1)
    report = markdown(machine, results, args.quick)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(report + "\n")
    print(f"\n{report}\n\nall benchmarks in {machine['total_seconds'] / 60:.1f} min; "
          f"{os.path.join(args.output_dir, 'results.md')}", flush=True)
    failed = [n for n, e in results.items() if "error" in e]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
