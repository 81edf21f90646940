r"""YouTube-8M video-level logistic regression: the starter code's `LogisticModel` on `mean_rgb` + `mean_audio`.

    bin/train --config=configs/yt8m/video_logistic.py                  # the embedded data's video-level files

One dense layer with a sigmoid per class over the concatenated features
(`logistic(num_classes, **model.logistic)` in `vt_keras.models.video_level`),
with an L2 penalty on its kernel. Everything else (data, training,
evaluation, export, `data.segment_labels`, `model.init_workdir`) is
configs/yt8m/video_moe.py's, documented there.
"""
from vt_keras.cli.common import load_config_module

video_moe = load_config_module("video_moe.py", beside=__file__)


def get_config():
    c = video_moe.get_config()
    # starter: l2_penalty=1e-8 under TF1's l2_regularizer (1e-8 * sum(w^2) / 2): Keras' L2(5e-9).
    c.model = video_moe.model_config("logistic", dict(l2_penalty=5e-9))
    return c
