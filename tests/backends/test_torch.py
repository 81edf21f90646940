"""The layers and losses on PyTorch, against TensorFlow and float64 references (see harness.py)."""
import importlib.util

import pytest

from tests.backends.harness import BackendChecks


# Skipped for the whole class, before any fixture runs: a skip raised inside the class-scoped
# `run` fixture errors the parametrized tests that reuse it under pytest 9.2.
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (pip install 'vt_keras[torch]')")
@pytest.mark.slow
class TestTorch(BackendChecks):
    BACKEND = "torch"
