"""The layers and losses on JAX, against TensorFlow and float64 references (see harness.py)."""
import pytest

from tests.backends.harness import BackendChecks


@pytest.mark.slow
class TestJax(BackendChecks):
    BACKEND = "jax"
