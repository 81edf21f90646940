"""Tasks the trainer can run, registered by name in `vt_keras.train.task.TASKS`.

Importing this package registers all of them; `config.task` picks one.
"""
from vt_keras.tasks import yt8m  # noqa: F401
from vt_keras.tasks import correlation_tower  # noqa: F401
from vt_keras.tasks import retrieval  # noqa: F401
from vt_keras.tasks import retrieval_crossclr  # noqa: F401  (the "crossclr" retrieval loss)
from vt_keras.tasks import cka_synthetic  # noqa: F401
from vt_keras.tasks import retrieval_vt_twins  # noqa: F401  (the "vt_twins" retrieval loss)
