"""Soft-DTW forward + backward speed and memory: our kernel on each backend against the CPU references.

    python bench/soft_dtw.py --json=soft_dtw.json            # full run, several minutes
    python bench/soft_dtw.py --quick --json=/tmp/quick.json  # fewer repeats, smaller scaling

Implementations (float32 for vt_keras; the references compute in float64
whatever they are given): our kernel on TensorFlow (through
`vt_keras.losses.soft_dtw`), on JAX and on PyTorch (their kernel modules in
`vt_keras.backend`, called directly so that all run in one process: the
public function adds only argument checks), the Cython `soft-dtw` package
(`sdtw.SoftDTW`, Blondel) and tslearn's numba `SoftDTW`. What is not
installed is reported and left out. The peers install with

    pip install numpy cython && pip install --no-build-isolation soft-dtw==0.1.6
    pip install tslearn==0.10.0

(`soft-dtw` 0.1.6's setup.py runs `pip install numpy cython` itself, which
fails inside pip's build isolation: install those first and build without
it), or `pip install -e '.[bench]' --no-build-isolation` after numpy and
cython.

Measures:

1. The headline: 64 pairs of 300 × 300 at γ = 0.1, value and gradient w.r.t.
   the cost; the peers work one pair at a time. All implementations are
   timed in alternation, so load from other processes hits them alike.
2. The VT-TWINS shape: all 4,096 pairs of a batch of 64 at 17 × 17.
3. Scaling with N = M = 100, 300, 1000 (64, 64 and 8 pairs): time and peak
   resident memory, each configuration in a fresh process.
4. With a GPU: the headline and the published CUDA anchor (512 pairs of
   256 × 256, about 32 ms on a Titan RTX, Maghoumi's numba kernel).

Wall time is the measure; CPU time (all threads of the process) is printed
beside it because this machine is shared. Benchmarks never assert.
"""
import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_ANCHOR = {"pairs": 512, "n": 256, "seconds": 0.032, "device": "Titan RTX (published)"}


def _costs(pairs, n, m, seed=0):
    # float32 straight away: a float64 temporary would set the memory high-water mark.
    return np.random.default_rng(seed).standard_normal(size=(pairs, n, m), dtype=np.float32)


def _vt_keras_step(device=None):
    import tensorflow as tf

    sys.path.insert(0, REPO)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(f"KERAS_BACKEND is {keras.backend.backend()!r}; the TensorFlow row needs tensorflow")
    from vt_keras.losses.soft_dtw import soft_dtw

    def step(cost, gamma):
        with tf.device(device) if device else _null():
            cost = tf.constant(cost)
            with tf.GradientTape() as tape:
                tape.watch(cost)
                values = soft_dtw(cost, gamma)
            grads = tape.gradient(values, cost)
        return values.numpy(), grads.numpy()

    return step


def _jax_step():
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, REPO)
    from vt_keras.backend import jax_soft_dtw

    @functools.lru_cache(maxsize=None)
    def compiled(gamma):
        def value_and_alignment(cost):
            values, pullback = jax.vjp(lambda c: jax_soft_dtw.soft_dtw(c, None, None, gamma, None), cost)
            return values, pullback(jnp.ones_like(values))[0]

        return jax.jit(value_and_alignment)

    def step(cost, gamma):
        values, grads = compiled(gamma)(jnp.asarray(cost))
        return np.asarray(values), np.asarray(grads)

    return step


def _torch_step():
    import torch

    sys.path.insert(0, REPO)
    from vt_keras.backend import torch_soft_dtw

    def step(cost, gamma):
        cost = torch.from_numpy(cost).requires_grad_(True)
        values = torch_soft_dtw.soft_dtw(cost, None, None, gamma, None)
        values.backward(torch.ones_like(values))
        return values.detach().numpy(), cost.grad.numpy()

    return step


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def _per_pair_step(soft_dtw_class):
    """A step of a peer whose `SoftDTW(cost, gamma)` object handles one float64 pair at a time."""

    def step(cost, gamma):
        cost = cost.astype(np.float64)
        values, grads = np.empty(len(cost)), np.empty_like(cost)
        for k, c in enumerate(cost):
            sdtw = soft_dtw_class(c, gamma=gamma)
            values[k] = sdtw.compute()
            grads[k] = sdtw.grad()
        return values, grads

    return step


def _cython_step():
    from sdtw.soft_dtw import SoftDTW
    return _per_pair_step(SoftDTW)


def _tslearn_step():
    from tslearn.metrics.softdtw_variants import SoftDTW
    return _per_pair_step(SoftDTW)


STEPS = {"vt_keras tensorflow": _vt_keras_step, "vt_keras jax": _jax_step, "vt_keras torch": _torch_step,
         "soft-dtw (Cython)": _cython_step, "tslearn (numba)": _tslearn_step}
OURS = ("vt_keras tensorflow", "vt_keras jax", "vt_keras torch")


def _available():
    out = {}
    for name, make in STEPS.items():
        try:
            out[name] = make()
        except ImportError as err:  # a missing peer is reported, not fatal
            print(f"  {name}: not installed ({err})")
    return out


def _time(step, cost, gamma):
    wall, cpu = time.perf_counter(), time.process_time()
    step(cost, gamma)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(steps, cost, gamma, repeats, budget_s=60.0):
    """Times each step `repeats` times in alternation; returns {name: stats}.

    An implementation stops repeating once its timed runs exceed `budget_s`
    (tslearn takes tens of seconds on 4,096 small pairs).
    """
    for step in steps.values():  # warm-up: XLA and numba compile here
        step(cost, gamma)
    runs = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if sum(w for w, _ in runs[name]) < budget_s:
                runs[name].append(_time(step, cost, gamma))
    return {name: dict(_stats(r), runs=len(r)) for name, r in runs.items()}


def _stats(runs):
    wall = [w for w, _ in runs]
    return {"wall_min_s": min(wall), "wall_median_s": float(np.median(wall)), "cpu_min_s": min(c for _, c in runs)}


def check_agreement(steps, cost, gamma):
    """Largest difference of our values and gradients from the first reference (sanity, not a test)."""
    results = {name: step(cost, gamma) for name, step in steps.items()}
    ref = next((v for k, v in results.items() if k not in OURS), None)
    if ref is None:
        return {}
    return {name: {"value_max_abs_diff": float(np.abs(results[name][0] - ref[0]).max()),
                   "grad_max_abs_diff": float(np.abs(results[name][1] - ref[1]).max())}
            for name in OURS if name in results}


def _versions():
    out = {}
    for module in ("jax", "torch", "sdtw", "tslearn"):
        try:
            out[module] = getattr(__import__(module), "__version__", "installed")
        except ImportError:
            out[module] = None
    return out


def _status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _reset_peak_rss():
    """Resets the peak-RSS mark (Linux) and returns the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") * 1024
    except OSError:  # no /proc: fall back on the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss():
    try:
        return _status_kb("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def scaling_child(name, pairs, n, gamma, repeats, device):
    """Runs in a fresh process: time and peak RSS growth of one implementation."""
    cost = _costs(pairs, n, n)
    step = _vt_keras_step(device) if name == "vt_keras tensorflow" else STEPS[name]()
    base = _reset_peak_rss()
    step(cost, gamma)
    runs = [_time(step, cost, gamma) for _ in range(repeats)]
    out = _stats(runs)
    out["peak_rss_growth_mb"] = (_peak_rss() - base) / 2**20
    if device and device.startswith("/GPU"):
        import tensorflow as tf

        out["gpu_peak_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    print(json.dumps(out))


def scaling(names, sizes, gamma, repeats, device=None):
    rows = []
    for n, pairs in sizes:
        for name in names:
            cmd = [sys.executable, __file__, "--child", name, "--pairs", str(pairs), "--n", str(n),
                   "--gamma", str(gamma), "--repeats", str(repeats)] + (["--device", device] if device else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"  {name} N={n}: failed\n{done.stderr[-2000:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(implementation=name, n=n, pairs=pairs, device=device or "cpu")
            rows.append(row)
            print(f"  {name:<20} N={n:<5} pairs={pairs:<4} wall {row['wall_min_s']:.3f} s (median "
                  f"{row['wall_median_s']:.3f})  peak RSS +{row['peak_rss_growth_mb']:.0f} MB")
    return rows


def _print_table(title, stats, reference_names):
    print(f"\n{title}")
    print(f"  {'implementation':<20} {'wall min':>9} {'median':>9} {'cpu min':>9} {'runs':>5}")
    for name, s in stats.items():
        print(f"  {name:<20} {s['wall_min_s']:9.3f} {s['wall_median_s']:9.3f} {s['cpu_min_s']:9.3f} {s['runs']:5d}")
    refs = [stats[r] for r in reference_names if r in stats]
    if not refs:
        return
    best = min(r["wall_min_s"] for r in refs)
    best_median = min(r["wall_median_s"] for r in refs)
    best_cpu = min(r["cpu_min_s"] for r in refs)
    for name in OURS:
        if name in stats:
            print(f"  {name}: {best / stats[name]['wall_min_s']:.1f}x the fastest reference (wall min), "
                  f"{best_median / stats[name]['wall_median_s']:.1f}x (wall median), "
                  f"{best_cpu / stats[name]['cpu_min_s']:.1f}x (cpu)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller scaling")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gamma", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return scaling_child(args.child, args.pairs, args.n, args.gamma, args.repeats, args.device)

    repeats = args.repeats or (3 if args.quick else 7)
    import tensorflow as tf

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": os.getloadavg(),
                          "tensorflow": tf.__version__, "versions": _versions()}}
    steps = _available()
    refs = [k for k in steps if k not in OURS]

    cost = _costs(64, 300, 300)
    report["agreement_64x300x300"] = check_agreement(steps, cost[:4], 0.1)
    report["headline_64x300x300"] = interleaved(steps, cost, 0.1, repeats)
    _print_table("64 pairs of 300 x 300, gamma 0.1, value + gradient (seconds)", report["headline_64x300x300"], refs)

    cost = _costs(4096, 17, 17)
    report["vt_twins_4096x17x17"] = interleaved(steps, cost, 0.1, repeats)
    _print_table("VT-TWINS shape: 4096 pairs of 17 x 17 (seconds)", report["vt_twins_4096x17x17"], refs)

    print("\nScaling (each in a fresh process; peak RSS growth over the process before its first call):")
    sizes = [(100, 64), (300, 64)] + ([] if args.quick else [(1000, 8)])
    report["scaling"] = scaling(list(steps), sizes, 0.1, max(2, repeats // 2))

    if tf.config.list_physical_devices("GPU"):
        print(f"\nGPU: {tf.config.list_physical_devices('GPU')[0].name}")
        gpu_sizes = [(300, 64), (CUDA_ANCHOR["n"], CUDA_ANCHOR["pairs"]), (1000, 64)]
        report["gpu"] = scaling(["vt_keras tensorflow"], gpu_sizes, 0.1, repeats, device="/GPU:0")
        anchor = [r for r in report["gpu"] if r["n"] == CUDA_ANCHOR["n"]]
        if anchor:
            print(f"  512 x 256 x 256: {anchor[0]['wall_min_s'] * 1e3:.1f} ms here vs "
                  f"{CUDA_ANCHOR['seconds'] * 1e3:.0f} ms published ({CUDA_ANCHOR['device']})")
        report["cuda_anchor"] = CUDA_ANCHOR
    report["machine"]["load_avg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
