"""Video–text retrieval with the symmetric InfoNCE (CLIP) loss: the baseline of the retrieval issues.

    bin/train --config=configs/retrieval/info_nce.py --workdir=workdirs/info_nce
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_base import get_base_config  # noqa: E402


def get_config():
    return get_base_config(loss="info_nce")
