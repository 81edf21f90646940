"""bin/compare: put the metrics of several workdirs side by side (trains nothing).

    bin/compare --workdirs=runs/nv_late,runs/nv_cmg,runs/nv_cmc
    bin/compare --workdirs='runs/*' --metrics=gap_error,map_error --output=table.md

Reads each workdir's `metrics.json` (or the file given by --metrics_file, e.g.
`eval_metrics.json` from bin/evaluate) and prints one row per workdir: the
shape of the error-rate tables of Goyal et al. (Tables 4 and 8).
"""
import glob
import json
import os
import sys

from absl import flags

from vt_keras.cli import common
from vt_keras.errors import ConfigError, DataError

FLAGS = flags.FLAGS
DEFAULT_METRICS = "gap_error,map_error,perr_error,hit_at_one_error"


def define_flags():
    flags.DEFINE_string("workdirs", None, "Comma-separated workdirs or glob patterns.")
    flags.DEFINE_string("metrics", DEFAULT_METRICS, "Comma-separated metric keys; a key with a "
                        "'level_*/' prefix shows every level, e.g. 'level_*/gap_error'.")
    flags.DEFINE_string("metrics_file", "metrics.json", "Which JSON file of each workdir to read.")
    flags.DEFINE_string("output", None, "Also write the table as Markdown to this file.")
    flags.mark_flag_as_required("workdirs")


def collect(workdirs, metrics_file):
    """`{workdir: metrics dict}` of every workdir that `workdirs` (comma-separated, globs allowed) names."""
    rows = {}
    patterns = [p.strip() for p in workdirs.split(",") if p.strip()]
    if not patterns:
        raise ConfigError(f"--workdirs={workdirs!r} names no workdir; expected workdirs or glob patterns")
    for pattern in patterns:
        for workdir in sorted(glob.glob(pattern)) or [pattern]:
            path = os.path.join(workdir, metrics_file)
            if not os.path.isfile(path):
                raise DataError(f"{path} does not exist; expected a workdir of a finished `train` "
                                f"(or set --metrics_file)")
            with open(path) as f:
                try:
                    metrics = json.load(f)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} is not valid JSON ({e}); expected the metrics a `train` or "
                                    "`evaluate` run writes") from e
            if not isinstance(metrics, dict):
                raise DataError(f"{path} holds a {type(metrics).__name__}; expected a JSON object of metrics")
            rows[workdir] = metrics
    return rows


def expand_keys(keys, rows):
    out = []
    for key in keys:
        if "*" in key:
            prefix, _, rest = key.partition("*")
            found = sorted({k for r in rows.values() for k in r if k.startswith(prefix) and k.endswith(rest)})
            out.extend(found)
        else:
            out.append(key)
    return out


def markdown_table(rows, keys):
    header = "| workdir | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for workdir, metrics in rows.items():
        cells = [f"{metrics[k]:.2f}" if isinstance(metrics.get(k), (int, float)) else "–" for k in keys]
        lines.append(f"| {os.path.basename(os.path.normpath(workdir)) or workdir} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    rows = collect(FLAGS.workdirs, FLAGS.metrics_file)
    keys = expand_keys([k.strip() for k in FLAGS.metrics.split(",") if k.strip()], rows)
    table = markdown_table(rows, keys)
    print(table)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            f.write(table + "\n")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
