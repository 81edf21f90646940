"""Tasks the trainer can run, registered by name in `vt_keras.train.task.TASKS`.

Importing this package registers all of them; `config.task` picks one.
"""
from vt_keras.tasks import yt8m  # noqa: F401
from vt_keras.tasks import yt8m_video  # noqa: F401
from vt_keras.tasks import correlation_tower  # noqa: F401
from vt_keras.tasks import retrieval  # noqa: F401
from vt_keras.tasks import retrieval_crossclr  # noqa: F401  (the "crossclr" retrieval loss)
from vt_keras.tasks import cka_synthetic  # noqa: F401
from vt_keras.tasks import retrieval_vt_twins  # noqa: F401  (the "vt_twins" retrieval loss)
from vt_keras.train import checkpoints, loop
from vt_keras.train.task import TASKS


def build_task(config):
    """The task `config.task` names, built from `config` (one per run)."""
    return TASKS.get(config.task, key="task")(config)


def train(config, workdir, strategy=None, log=print, task=None):
    """Builds the task of `config` (unless given) and trains it with `vt_keras.train.loop.train`.

    Returns:
        `(final evaluation metrics, model)`.

    Example:
        >>> results, model = train(config, "runs/late")
    """
    return loop.train(task or build_task(config), workdir, strategy=strategy, log=log)


def restore_model(config, workdir):
    """Builds the task of `config` and its model, and loads `workdir`'s latest checkpoint into it.

    Returns:
        `(task, model)`; a workdir without a checkpoint, or one whose
        checkpoint does not fit the model, is one `CheckpointError` line.
    """
    task = build_task(config)
    model = task.build_model()
    path = checkpoints.latest_checkpoint(workdir, "the workdir of a `train` run", name=f"--workdir={workdir}")
    checkpoints.restore_verified(path, f"the model of {workdir}/{checkpoints.CONFIG_FILE}",
                                 "was the workdir trained by another version of the config?", model=model)
    return task, model
