"""NetVLAD, cross-modal attention gated by the frozen correlation tower's probability (CM-G); needs --config.model.tower_workdir."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yt8m_base import get_base_config  # noqa: E402


def get_config():
    return get_base_config(aggregator="netvlad", fusion="cm_gated")
