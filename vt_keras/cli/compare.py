"""bin/compare: put the metrics of several workdirs side by side, or their mean ± sd over seeds (trains nothing).

    bin/compare --workdirs=runs/nv_late,runs/nv_cmg,runs/nv_cmc
    bin/compare --workdirs='runs/*' --metrics=gap_error,map_error --output=table.md

Reads each workdir's `metrics.json` (or the file given by --metrics_file, e.g.
`eval_metrics.json` from bin/evaluate) and prints one row per workdir: the
shape of the error-rate tables of Goyal et al. (Tables 4 and 8). A sweep's
`metrics.json` (`{value: metrics}`) gives one row per value.

Several seeds per method (the paper's tables are "an average of 5 test runs"):
train each seed into its own workdir, then group them with --group_by=seed:

    for s in 0 1 2 3 4; do
      bin/train --config=configs/yt8m/classifier.py:aggregator=netvlad,fusion=late --config.seed=$s \\
          --workdir=runs/nv_late_s$s --export=false
      bin/train --config=configs/yt8m/classifier.py:aggregator=netvlad,fusion=cm_concat --config.seed=$s \\
          --config.model.tower_workdir=runs/tower --workdir=runs/nv_cmc_s$s --export=false
    done
    bin/compare --workdirs='runs/nv_*' --group_by=seed \\
        --metrics='gap_error,level_*/gap_error,category_*/gap_error' --transpose

--group_by=seed makes one row of the workdirs whose `config.json` is the same
apart from `seed` (and that evaluated the same data, where the metrics file
names it), named by what their workdir names share (`nv_late_s*`). A cell is
then `mean ± sd` over the group's n runs, sd the sample standard deviation
(n - 1 in the denominator). A cell of another group than the reference
(--reference, default the first row) ends in `~` when its difference from the
reference is within the spread: |mean - mean_ref| <= max(sd, sd_ref). With a
single run in either group there is no spread and no mark. The rule is a
simple screen, not a significance test: with 3 to 5 seeds a difference
beyond it can still be chance.

Per taxonomy level and per top-level category: the keys `level_<l>/<metric>`
and `category_<name>/<metric>` of the metrics files (bin/train and
bin/evaluate write them when a taxonomy.json lies beside the data); a
`*` in a --metrics key expands to every such key, e.g. `level_*/gap_error`
or `category_*/gap_error` (the paper's Table 5).
"""
import glob
import json
import math
import os
import re
import sys

from absl import flags

from vt_keras.cli import common
from vt_keras.errors import ConfigError, DataError

FLAGS = flags.FLAGS
DEFAULT_METRICS = "gap_error,map_error,perr_error,hit_at_one_error"
GROUP_BY = ("none", "seed")
WITHIN_SPREAD = "~"
# Keys of config.json that differ between the seeds of one method.
SEED_KEYS = ("seed",)


def define_flags():
    flags.DEFINE_string("workdirs", None, "Comma-separated workdirs or glob patterns.")
    flags.DEFINE_string("metrics", DEFAULT_METRICS, "Comma-separated metric keys; a key with a '*' shows every "
                        "key it matches, e.g. 'level_*/gap_error' (each taxonomy level) or "
                        "'category_*/gap_error' (each top-level category).")
    flags.DEFINE_string("metrics_file", "metrics.json", "Which JSON file of each workdir to read.")
    flags.DEFINE_enum("group_by", "none", GROUP_BY, "none: one row per workdir. seed: one row per method, "
                      "the workdirs whose config.json differ only in `seed`, as mean ± sd over them "
                      "(see the description above for the within-the-spread mark).")
    flags.DEFINE_string("reference", None, "The group (its name as the table shows it) the others are compared "
                        "with for the within-the-spread mark. Default: the first.")
    flags.DEFINE_bool("transpose", False, "One row per metric and one column per workdir or group (the "
                      "paper's Tables 4 and 8), instead of one row per workdir or group.")
    flags.DEFINE_integer("digits", 2, "Decimals shown.")
    flags.DEFINE_string("output", None, "Also write the table as Markdown to this file.")
    flags.mark_flag_as_required("workdirs")


def _read_json(path, what):
    """The JSON object in `path`; `what` names what it should hold, for the error line."""
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON ({e}); expected {what}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}; expected a JSON object: {what}")
    return data


def collect(workdirs, metrics_file):
    """`{run: metrics dict}` of every workdir that `workdirs` (comma-separated, globs allowed) names.

    A run is a workdir, or `<workdir>/<value>` for each value of a sweep's
    metrics file (`{value: metrics}`). Files a glob matches are skipped.
    """
    rows = {}
    patterns = [p.strip() for p in workdirs.split(",") if p.strip()]
    if not patterns:
        raise ConfigError(f"--workdirs={workdirs!r} names no workdir; expected workdirs or glob patterns")
    for pattern in patterns:
        # A glob's matches that are not directories (logs beside the workdirs) are not runs.
        for workdir in sorted(p for p in glob.glob(pattern) if os.path.isdir(p)) or [pattern]:
            path = os.path.join(workdir, metrics_file)
            if not os.path.isfile(path):
                raise DataError(f"{path} does not exist; expected a workdir of a finished `train` "
                                f"(or set --metrics_file)")
            metrics = _read_json(path, "the metrics a `train` or `evaluate` run writes")
            if metrics and all(isinstance(v, dict) for v in metrics.values()):
                rows.update({os.path.join(workdir, value): m for value, m in metrics.items()})
            else:
                rows[workdir] = metrics
    return rows


def shared_name(runs):
    """What the runs' names share: `runs/nv_late_s0`, `runs/nv_late_s1` → `nv_late_s*`; a sweep's `w/0`, `w/1` → `w/*`."""
    names = [os.path.basename(os.path.normpath(r)) or r for r in runs]
    if len(set(names)) == 1:
        return names[0]
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([n[len(prefix):][::-1] for n in names])[::-1]
    if prefix or suffix:
        return f"{prefix}*{suffix}"
    parents = {os.path.dirname(os.path.normpath(r)) for r in runs}
    if len(parents) == 1 and os.path.basename(parents.pop()):
        return f"{os.path.basename(os.path.dirname(os.path.normpath(runs[0])))}/*"
    return f"{names[0]} (+{len(names) - 1})"


def group_runs(rows, group_by):
    """`{group name: [run, ...]}` in the order runs were named (see --group_by)."""
    if group_by == "none":
        names = [shared_name([run]) for run in rows]
        return {(name if names.count(name) == 1 else run): [run] for name, run in zip(names, rows)}
    groups = {}
    for run, metrics in rows.items():
        path = os.path.join(run, "config.json")
        if not os.path.isfile(path):
            raise DataError(f"{path} does not exist; --group_by=seed reads each run's config.json "
                            "(written by bin/train) to find the runs of one method")
        config = _read_json(path, "the config bin/train writes")
        key = json.dumps({k: v for k, v in config.items() if k not in SEED_KEYS}, sort_keys=True)
        key += "|" + json.dumps(metrics.get("data"))  # runs evaluated on other data are other rows
        groups.setdefault(key, []).append(run)
    named = {}
    for runs in groups.values():
        name = shared_name(runs)
        named[name if name not in named else f"{name} [{len(named)}]"] = runs
    return named


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


def summarize(values):
    """`(mean, sample sd or None, n)` of the finite numbers in `values`; `(None, None, 0)` without any."""
    numbers = [float(v) for v in values
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    n = len(numbers)
    if not n:
        return None, None, 0
    mean = sum(numbers) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in numbers) / (n - 1)) if n > 1 else None
    return mean, sd, n


def within_spread(stats, reference):
    """True when |mean - mean_ref| <= max(sd, sd_ref); None when either side has no spread (one run)."""
    (mean, sd, _), (ref_mean, ref_sd, _) = stats, reference
    if mean is None or ref_mean is None or sd is None or ref_sd is None:
        return None
    return abs(mean - ref_mean) <= max(sd, ref_sd)


def table(rows, groups, keys, reference=None, transpose=False, digits=2):
    """The Markdown table (see the module docstring) and whether any cell shows a spread."""
    stats = {g: {k: summarize([rows[r].get(k) for r in runs]) for k in keys} for g, runs in groups.items()}
    reference = re.sub(r" \(n=\d+\)$", "", reference) if reference is not None else next(iter(groups))
    if reference not in groups:
        raise ConfigError(f"--reference={reference!r} is not a group of the table; expected one of {', '.join(groups)}")
    spread = False

    def cell(group, key):
        nonlocal spread
        mean, sd, _ = stats[group][key]
        if mean is None:
            return "–"
        text = f"{mean:.{digits}f}"
        if sd is not None:
            spread = True
            text += f" ± {sd:.{digits}f}"
            if group != reference and within_spread(stats[group][key], stats[reference][key]):
                text += f" {WITHIN_SPREAD}"
        return text

    sizes = {g: len(runs) for g, runs in groups.items()}
    name = "workdir" if all(n == 1 for n in sizes.values()) else "runs"
    label = {g: g if sizes[g] == 1 else f"{g} (n={sizes[g]})" for g in groups}
    if transpose:
        header, lines = ["metric"] + [label[g] for g in groups], []
        for key in keys:
            lines.append([key] + [cell(g, key) for g in groups])
    else:
        header, lines = [name] + list(keys), []
        for g in groups:
            lines.append([label[g]] + [cell(g, key) for key in keys])
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out), spread, reference


def legend(reference):
    return (f"mean ± sd: sample standard deviation over a group's runs (n - 1 denominator). {WITHIN_SPREAD}: the "
            f"difference from the reference {reference!r} is within the spread, |mean - mean_ref| <= "
            "max(sd, sd_ref); no mark where either side has a single run.")


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    if FLAGS.digits < 0:
        raise ConfigError(f"--digits={FLAGS.digits}; expected a number of decimals >= 0")
    rows = collect(FLAGS.workdirs, FLAGS.metrics_file)
    keys = expand_keys([k.strip() for k in FLAGS.metrics.split(",") if k.strip()], rows)
    groups = group_runs(rows, FLAGS.group_by)
    text, spread, reference = table(rows, groups, keys, reference=FLAGS.reference, transpose=FLAGS.transpose,
                                    digits=FLAGS.digits)
    if spread:
        text += "\n\n" + legend(reference)
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
