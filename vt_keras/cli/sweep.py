"""Runs one config several times with one key changed, for experiments that compare methods.

A config with `sweep = {"key": "method", "values": ("a", "b")}` trains each
value into `<workdir>/<value>` with the same trainer, then writes
`<workdir>/metrics.json` as `{value: that run's metrics}` and lets the task
add its own summary (plots) through `Task.after_sweep(workdir, results)`.
"""
import copy
import json
import os

from vt_keras.errors import ConfigError


def run_sweep(config, workdir, strategy, train_one, log=print):
    from vt_keras.train.strategy import is_chief

    key, values = config.sweep.key, tuple(config.sweep["values"])
    if not values:
        raise ConfigError("sweep.values is empty; expected the values of sweep.key to run")
    results = {}
    task = None
    for value in values:
        sub = copy.deepcopy(config)
        with sub.unlocked():
            node = sub
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            if leaf not in node:
                raise ConfigError(f"sweep.key={key!r} is not a key of the config")
            node[leaf] = value
            sub.sweep = None
        log(f"=== {key}={value}")
        task, results[str(value)], _ = train_one(sub, os.path.join(workdir, str(value)), strategy, log=log)
    if is_chief(strategy):
        with open(os.path.join(workdir, "metrics.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        if task is not None:
            task.after_sweep(workdir, results)
        log(f"wrote {os.path.join(workdir, 'metrics.json')}")
    return results
