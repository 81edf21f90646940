"""Checkpoints that survive a crash and refuse to load into the wrong model.

The workdir holds `config.json` (the config that trained it) and
`checkpoints/` (a `tf.train.CheckpointManager`). A restart of the same
command restores the latest checkpoint and continues to the same total step
count. A workdir whose model config differs from the current one, or whose
variables do not fit the current model, is a `CheckpointError` that names the
differing keys; nothing in the workdir is overwritten in that case.

Under `MultiWorkerMirroredStrategy` every worker must take part in saving; only
the chief writes into the workdir, the others into a scratch directory that is
removed afterwards (TensorFlow's documented pattern).
"""
import json
import os
import shutil
import tempfile

import tensorflow as tf

from vt_keras.errors import CheckpointError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def save_config(config, workdir):
    """Writes the config as JSON into the workdir (what evaluate/export read)."""
    tf.io.gfile.makedirs(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def load_config(workdir):
    """Reads the `ConfigDict` a workdir was trained with."""
    import ml_collections

    path = os.path.join(workdir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise CheckpointError(f"--workdir={workdir}: no {CONFIG_FILE} there; expected the workdir of a "
                              "finished or running `train` (it writes config.json first)")
    with tf.io.gfile.GFile(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


def check_same_model(config, workdir, sections=("task", "model", "data.features", "data.num_classes")):
    """Raises `CheckpointError` when the workdir's saved config built a different model."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        saved = _flatten(json.load(f))
    current = _flatten(json.loads(config.to_json_best_effort()))
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if not any(key == s or key.startswith(s + ".") for s in sections):
            continue
        if saved.get(key) != current.get(key):
            diffs.append(f"{key}: checkpoint {saved.get(key, '<absent>')} vs now {current.get(key, '<absent>')}")
    if diffs:
        raise CheckpointError(
            f"--workdir={workdir} holds a checkpoint of a different model ({'; '.join(diffs[:3])}"
            f"{'; ...' if len(diffs) > 3 else ''}); use a new --workdir or the original config"
        )


def track_variables(model):
    """Makes every variable of `model` part of TensorFlow's checkpoint graph, keyed by its path.

    On the TensorFlow backend Keras 3 keeps sublayers held in Python lists
    (the tower's dense stacks, the Transformer's blocks, CrossModalNetVLAD's
    transforms) out of the object graph that `tf.train.Checkpoint` walks.
    Trainable ones still reach a training checkpoint through the optimizer,
    but a model restored without its optimizer (evaluate, export, plots) and
    a frozen warm-started part would silently keep their initial values.
    The random generators' states (dropout) are variables too: saving them
    lets a resumed run draw the same dropout masks as an uninterrupted one.
    Variable paths depend only on the config (every sublayer with weights is
    named), so the same config restores them one to one.

    Returns:
        `model`, with a `checkpoint_variables` attribute holding the variables.
    """
    holder = tf.Module(name="variables_by_path")
    holder.variables_by_path = {v.path: v for v in model.variables}
    model.checkpoint_variables = holder
    return model


def restore_verified(path, what, hint, **trackables):
    """Restores `trackables` from the checkpoint `path`, or raises one `CheckpointError` line.

    Every variable of `trackables` must be in the checkpoint (a checkpoint
    of another model is refused, never half-loaded); checkpoint values that
    nothing here asks for (an optimizer's slots when only the model is
    restored) are fine.

    Args:
        path: a checkpoint prefix (`.../checkpoints/ckpt-1000`).
        what: what the checkpoint should fit, for the message (e.g.
            "the model of runs/nv/config.json").
        hint: what the user can do, for the message.
        **trackables: the objects to restore, by checkpoint key.

    Returns:
        `path`.
    """
    try:
        status = tf.train.Checkpoint(**trackables).restore(path)
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise CheckpointError(f"checkpoint {path} does not fit {what} ({first}); {hint}") from e
    status.expect_partial()
    return path


def latest_checkpoint(workdir, what, name=None):
    """The newest checkpoint of a workdir, or one `CheckpointError` line.

    Args:
        workdir: the directory a `train` run wrote.
        what: what the workdir should have been, for the message.
        name: how the user gave the workdir (`--workdir=runs/a`,
            `model.tower_workdir=runs/t`); default: the path.
    """
    name = name or workdir
    if not tf.io.gfile.isdir(workdir):
        raise CheckpointError(f"{name}: no such directory; expected {what}")
    path = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if path is None:
        raise CheckpointError(f"{name} has no checkpoint in {CHECKPOINT_DIR}/; expected {what}")
    return path


class CheckpointKeeper:
    """Saves and restores the training state of one run."""

    def __init__(self, workdir, chief=True, max_to_keep=3, **trackables):
        self.workdir = workdir
        self.chief = chief
        self._trackables = trackables
        self.checkpoint = tf.train.Checkpoint(**trackables)
        directory = os.path.join(workdir, CHECKPOINT_DIR)
        self._scratch = None
        if not chief:
            self._scratch = tempfile.mkdtemp(prefix="vt_keras_ckpt_")
            directory = self._scratch
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)
        # Non-chief workers restore from the chief's directory.
        self._restore_dir = os.path.join(workdir, CHECKPOINT_DIR)

    @property
    def latest(self):
        return tf.train.latest_checkpoint(self._restore_dir)

    def restore(self):
        """Restores the latest checkpoint if any; returns its path or None."""
        path = self.latest
        if path is None:
            return None
        return restore_verified(path, "the model being built", "use a new --workdir or the config that wrote it",
                                **self._trackables)

    def save(self, step):
        path = self.manager.save(checkpoint_number=int(step))
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            tf.io.gfile.makedirs(self._scratch)
        return path
