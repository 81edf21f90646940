"""bin/train's default config: masked mean/max frame pooling, late fusion, a mixture of experts.

The pipeline's baseline and the main job of `bin/train` with no flags: each
modality's frames are pooled separately, concatenated, and classified by the
YouTube-8M MoE head with context gating. It is `configs/yt8m/classifier.py`
with its defaults (`aggregator=pool,fusion=late`); every key is documented
there.
"""
from vt_keras.cli.common import load_config_module


def get_config():
    return load_config_module("classifier.py", beside=__file__).get_config()
