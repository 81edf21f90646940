"""The default config: late fusion of masked mean/max frame pooling into a mixture of experts.

The pipeline's baseline (and `bin/train`'s main job): each modality's frames
are pooled separately, concatenated, and classified by the YouTube-8M MoE head
with context gating.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yt8m_base import get_base_config  # noqa: E402


def get_config():
    return get_base_config(aggregator="pool", fusion="late")
