"""The layers and losses on PyTorch, against TensorFlow and float64 references (see harness.py)."""
import pytest

from tests.backends.harness import BackendChecks


@pytest.mark.slow
class TestTorch(BackendChecks):
    BACKEND = "torch"
