"""Throughput of the YouTube-8M frame-level input pipeline.

Writes `--num_records` frame-level records of 300 frames (rgb 1024 + audio
128 bytes per frame, like the released data) into a temporary directory and
reads them three ways:

- raw:            `tf.data.TFRecordDataset` over the files, records only;
- parse only:     raw records batched and parsed by `parse_frame_example`;
- frame_dataset:  the library pipeline (interleave with per-file checks,
                  batched parsing, prefetch), frames as uint8 codes and a
                  mask: what the trainer reads (the model dequantizes them
                  on the device, `YT8MClassification.model_inputs`);
- frame_dataset (float32): the same with `dtype="float32"`, frames
                  dequantized on the host (for users who want floats);
- per-record:     the peer, the YouTube-8M starter code's reader design on
                  TF2 (our rewrite: one `parse_single_sequence_example` per
                  record, `decode_raw`, dequantize, pad, concatenate the
                  features, then batch; parallel map and prefetch added);
- parse, direct:  not a reader: `parse_frame_example` (uint8) as a
                  `tf.function` called from Python on batches of records
                  already in memory, outside tf.data. Beside "parse only"
                  it shows what tf.data's execution of the same function
                  costs.

Reports examples/s (the median of `--rounds` passes, the readers taking
turns), the ratio to the raw read rate, and the process CPU time per batch
of `--batch_size` (all threads: with 2 cores a reader cannot run faster
than half its CPU time). Files are read once before timing so every figure
reads from the page cache. Last, the cost per graph node of one function
call, mapped by tf.data against called directly (`node_cost`): why the
parsers keep their graphs small (`vt_keras.data.checks.gate`).

    python bench/input_pipeline.py --num_records 2000 --json input_pipeline.json
    python bench/input_pipeline.py --quick          # 500 records, for bench/run_all.py --quick

`--bfc_allocator` sets TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow
starts: with TensorFlow's default CPU allocator every batch of float frames
is fresh memory, and page faults can dominate the parse time.
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 300


def write_records(directory, num_records, num_files, seed=0):
    from vt_keras.data import yt8m

    rng = np.random.default_rng(seed)
    per_file = np.array_split(np.arange(num_records), num_files)
    paths = []
    for k, ids in enumerate(per_file):
        path = os.path.join(directory, f"bench-{k:05d}-of-{num_files:05d}.tfrecord")
        yt8m.write_frame_records(path, (
            {"id": f"video{i:06d}", "labels": rng.choice(3862, 3, replace=False),
             "rgb": rng.integers(0, 256, (FRAMES, 1024), dtype=np.uint8),
             "audio": rng.integers(0, 256, (FRAMES, 128), dtype=np.uint8)} for i in ids))
        paths.append(path)
    return paths


def per_record_reader(paths, batch_size, num_classes=3862):
    """The starter code's frame-level reader design: parse and pad record by record, then batch."""
    import tensorflow as tf

    def parse(record):
        context, lists = tf.io.parse_single_sequence_example(
            record, context_features={"id": tf.io.FixedLenFeature([], tf.string),
                                      "labels": tf.io.VarLenFeature(tf.int64)},
            sequence_features={name: tf.io.FixedLenSequenceFeature([], tf.string) for name in ("rgb", "audio")})
        frames = []
        for name, dim in (("rgb", 1024), ("audio", 128)):
            codes = tf.reshape(tf.io.decode_raw(lists[name], tf.uint8), [-1, dim])
            num_frames = tf.minimum(tf.shape(codes)[0], FRAMES)
            x = tf.cast(codes[:num_frames], tf.float32) * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)
            frames.append(tf.pad(x, [[0, FRAMES - num_frames], [0, 0]]))
        labels = tf.sparse.to_indicator(context["labels"], num_classes)
        return {"id": context["id"], "frames": tf.concat(frames, axis=1), "labels": labels,
                "num_frames": num_frames}

    return (tf.data.TFRecordDataset(paths).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def rate(dataset, count_fn):
    """(examples/s, examples, process CPU seconds per example) of one pass."""
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for element in dataset:
        n += count_fn(element)
    return n / (time.perf_counter() - start), n, (time.process_time() - cpu) / n


class DirectParse:
    """Iterable: `parse` called from Python on each in-memory batch of records (no tf.data)."""

    def __init__(self, batches, parse):
        self.batches, self.parse = batches, parse

    def __iter__(self):
        return (self.parse(b) for b in self.batches)


def node_cost(nodes=600, calls=50, rounds=3):
    """Seconds per graph node of one function call: mapped by tf.data against called directly.

    The function is a chain of `nodes` // 2 multiply-adds on a 32-vector, so
    the work per node is negligible and the figure is the per-node overhead.
    Also the cost of the same chain in the untaken branch of a `tf.cond`
    under tf.data (what a parser's error-message code costs on good data).
    """
    import tensorflow as tf

    def chain(x):
        for i in range(nodes // 2):
            x = x * 1.0001 + float(i)
        return x

    def untaken(x):
        return tf.cond(tf.reduce_all(x > -1.0), lambda: x, lambda: chain(x))

    x = tf.zeros([32])
    out = {}
    for name, fn in (("direct", chain), ("tf.data", chain), ("tf.data, untaken tf.cond branch", untaken)):
        f = tf.function(fn)
        if name == "direct":
            f(x)

            def one_pass():
                for _ in range(calls):
                    f(x)
        else:
            ds = tf.data.Dataset.from_tensors(x).repeat(calls).map(f)

            def one_pass():
                for _ in ds:
                    pass
        one_pass()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            one_pass()
            times.append((time.perf_counter() - start) / calls / nodes)
        out[name] = float(np.median(times))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_records", type=int, default=None, help="default 2000 (500 with --quick)")
    parser.add_argument("--quick", action="store_true", help="500 records unless --num_records is given")
    parser.add_argument("--num_files", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the files per reader, alternated")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--dir", default=None, help="where to write the records (default: a temp dir)")
    parser.add_argument("--bfc_allocator", action="store_true", help="use TensorFlow's BFC CPU allocator")
    args = parser.parse_args()
    if args.num_records is None:
        args.num_records = 500 if args.quick else 2000
    if args.bfc_allocator:
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    sys.path.insert(0, REPO)
    import tensorflow as tf

    from vt_keras.data import yt8m

    directory = args.dir or tempfile.mkdtemp(prefix="vt_keras_bench_")
    try:
        start = time.perf_counter()
        paths = write_records(directory, args.num_records, args.num_files)
        write_s = time.perf_counter() - start
        size_mb = sum(os.path.getsize(p) for p in paths) / 2**20
        pattern = os.path.join(directory, "bench-*.tfrecord")

        raw = tf.data.TFRecordDataset(paths)
        rate(raw, lambda r: 1)  # warm the page cache
        parse_only = raw.batch(args.batch_size).map(
            lambda r: yt8m.parse_frame_example(r, max_frames=FRAMES), num_parallel_calls=tf.data.AUTOTUNE)
        readers = {
            "raw": (raw, lambda r: 1),
            "parse only": (parse_only.prefetch(tf.data.AUTOTUNE), lambda b: int(b["id"].shape[0])),
            "frame_dataset": (yt8m.frame_dataset(pattern, args.batch_size, max_frames=FRAMES, dtype="uint8"),
                              lambda b: int(b["id"].shape[0])),
            "frame_dataset (float32)": (yt8m.frame_dataset(pattern, args.batch_size, max_frames=FRAMES,
                                                           dtype="float32"), lambda b: int(b["id"].shape[0])),
            "per-record (peer)": (per_record_reader(paths, args.batch_size), lambda b: int(b["id"].shape[0])),
        }
        # Batches of records in memory (the whole set), parsed by direct calls.
        direct = tf.function(lambda r: yt8m.parse_frame_example(r, max_frames=FRAMES, dtype="uint8"))
        batches = list(raw.batch(args.batch_size))
        direct(batches[0])
        readers["parse, direct (no tf.data)"] = (DirectParse(batches, direct), lambda b: int(b["id"].shape[0]))
        # Rounds in alternation; the median round per reader is reported.
        runs = {name: [] for name in readers}
        for _ in range(args.rounds):
            for name, (dataset, count) in readers.items():
                runs[name].append(rate(dataset, count))
        results = {name: ([r for r, _, _ in v], v[0][1], [c for _, _, c in v]) for name, v in runs.items()}
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)

    raw_rate = float(np.median(results["raw"][0]))
    print(f"{args.num_records} records x {FRAMES} frames in {args.num_files} files, {size_mb:.0f} MiB "
          f"(written in {write_s:.1f} s); batch {args.batch_size}; {os.cpu_count()} CPUs; "
          f"BFC allocator {'on' if args.bfc_allocator else 'off'}; median (min-max) of {args.rounds} passes")
    print(f"{'reader':<28}{'examples/s':>12}{'min-max':>16}{'MiB/s':>10}{'vs raw':>9}{'CPU ms/batch':>14}")
    rows = []
    for name, (rates, n, cpus) in results.items():
        assert n == args.num_records, (name, n)
        value = float(np.median(rates))
        mib = value * size_mb / args.num_records
        spread = f"{min(rates):.0f}-{max(rates):.0f}"
        cpu_ms = float(np.median(cpus)) * args.batch_size * 1e3
        print(f"{name:<28}{value:>12.1f}{spread:>16}{mib:>10.1f}{value / raw_rate:>9.3f}{cpu_ms:>14.2f}")
        rows.append({"reader": name, "examples_per_s": value, "examples_per_s_min": float(min(rates)),
                     "examples_per_s_max": float(max(rates)), "mib_per_s": mib, "ratio_to_raw": value / raw_rate,
                     "cpu_ms_per_batch": cpu_ms})
    per_node = node_cost()
    print("cost per graph node of a function call (a chain of 600 trivial ops): "
          + ", ".join(f"{name} {1e6 * v:.2f} us" for name, v in per_node.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"num_records": args.num_records, "frames": FRAMES, "num_files": args.num_files,
                       "batch_size": args.batch_size, "size_mib": size_mb, "cpus": os.cpu_count(),
                       "bfc_allocator": args.bfc_allocator, "load_average": os.getloadavg(),
                       "tensorflow": tf.__version__, "machine": platform.machine(), "results": rows,
                       "seconds_per_graph_node": per_node}, f, indent=1)


if __name__ == "__main__":
    main()
