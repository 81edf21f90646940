"""Warm start: a new run begins from the weights another workdir trained (`model.init_workdir`).

The typical use is the 2019 segment challenge's: train a classifier on whole
videos, then fine-tune it on rated segments (`data.segment_labels=True`)
from those weights. Only the model's weights are loaded, not the optimizer
or the step: the new run has its own schedule and step count. A resumed run
loads the warm start first and then its own latest checkpoint, which wins.
"""
import json
import os

from vt_keras.errors import ConfigError
from vt_keras.train import checkpoints

# Keys that name where weights come from, not what the model is.
SOURCE_KEYS = ("model.init_workdir", "model.tower_workdir")
# What fixes a model's weights: the same as checkpoints.check_same_model's sections.
MODEL_KEYS = ("task", "model", "data.features", "data.num_classes")


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return out


def model_differences(config, saved):
    """`[(key, saved value, current value)]` of the keys that fix the model's weights and differ.

    Args:
        config: the current `ConfigDict`.
        saved: the other workdir's config (a `ConfigDict` or dict).

    Returns:
        The differing keys, sorted; `SOURCE_KEYS` are ignored.
    """
    mine = _flat(json.loads(config.to_json_best_effort()))
    theirs = _flat(json.loads(saved.to_json_best_effort()) if hasattr(saved, "to_json_best_effort") else saved)
    keys = sorted(k for k in set(mine) | set(theirs)
                  if any(k == s or k.startswith(s + ".") for s in MODEL_KEYS) and k not in SOURCE_KEYS)
    return [(k, theirs.get(k, "<absent>"), mine.get(k, "<absent>")) for k in keys if theirs.get(k) != mine.get(k)]


def check_init_workdir(config):
    """Checks `model.init_workdir` before a run writes anything: a checkpoint there, of this same model.

    `bin/train` runs it (through the task's `prepare_config`) before it
    saves the run's config, so a wrong warm start leaves no workdir behind
    that a corrected rerun would then refuse as another model's.

    Args:
        config: the run's config, data values filled (`data.num_classes`).

    Returns:
        The latest checkpoint of `model.init_workdir`, or None when it is "".

    Raises:
        CheckpointError: no such directory or no checkpoint (one line).
        ConfigError: the workdir's config.json describes another model; the
            line names the first differing keys.

    Example:
        >>> check_init_workdir(config)  # config.model.init_workdir = "runs/video_moe"
        'runs/video_moe/checkpoints/ckpt-3'
    """
    init_workdir = config.model.init_workdir
    if not init_workdir:
        return None
    name = f"model.init_workdir={init_workdir}"
    what = "the workdir of a `train` run of this model to start from"
    latest = checkpoints.latest_checkpoint(init_workdir, what, name=name)
    where = os.path.join(init_workdir, checkpoints.CONFIG_FILE)
    diffs = model_differences(config, checkpoints.load_config(init_workdir))
    if diffs:
        shown = "; ".join(f"{key}={theirs} there, {mine} here" for key, theirs, mine in diffs[:3])
        raise ConfigError(f"{name} holds another model ({where}: {shown}{'; ...' if len(diffs) > 3 else ''}); "
                          "expected a workdir trained with this config's task, model, data.features and "
                          "data.num_classes")
    return latest


def load_workdir_weights(model, config):
    """Loads the weights of `model.init_workdir`'s latest checkpoint into `model` (nothing if it is "").

    Args:
        model: the freshly built model of `config`.
        config: the current config; `model.init_workdir` is the workdir of a
            finished or running `train` of the same model (e.g. trained at
            video level, now fine-tuned on rated segments): its task, model
            section, features and class count must equal this config's.

    Returns:
        The checkpoint path loaded, or None.

    Raises:
        CheckpointError: no such directory, no checkpoint, or a checkpoint
            whose variables do not fit (one line).
        ConfigError: the workdir's config.json describes another model; the
            line names the first differing keys.

    Example:
        >>> load_workdir_weights(model, config)  # config.model.init_workdir = "runs/video_moe"
    """
    latest = check_init_workdir(config)
    if latest is None:
        return None
    where = os.path.join(config.model.init_workdir, checkpoints.CONFIG_FILE)
    return checkpoints.restore_verified(latest, f"the model of {where}", "was it trained by another version of "
                                        "the config?", model=model)
