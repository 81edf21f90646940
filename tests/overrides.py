"""Dotted config overrides for test configs (no side effects on import: config files of subprocesses use it)."""


def set_keys(config, overrides):
    """Sets dotted keys of a ConfigDict: `set_keys(c, {"train.num_steps": 3})`."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
