"""Transformer, early fusion: frames of both modalities concatenated per time step, one aggregator."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yt8m_base import get_base_config  # noqa: E402


def get_config():
    return get_base_config(aggregator="transformer", fusion="early")
