"""Shared test setup.

TensorFlow sees one CPU here. Tests of `MirroredStrategy` need two devices, and
logical devices can only be configured before TensorFlow initialises them, so
this file splits the CPU into two logical devices before any test runs.
"""
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS
)

_KEY_BASES = itertools.count(start=7_000_000, step=10_000)


def mirrored_strategy(devices):
    """A `MirroredStrategy` over `devices` with collective keys of its own.

    Every `MirroredStrategy` numbers its collective ops from the same start and
    TensorFlow caches each (group, instance) key's parameters for the life of
    the process, so a second strategy whose n-th collective differs in kind or
    dtype from an earlier one's fails ("Collective instance ... expected
    type"). Tests create strategies only through this function.
    """
    cls = type("MirroredStrategyOwnKeys", (tf.distribute.MirroredStrategy,),
               {"_collective_key_base": next(_KEY_BASES)})
    return cls(devices)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rng():
    """A seeded numpy generator, fresh per test."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    import keras

    keras.utils.set_random_seed(1234)
    yield
    # No clear_session(): it costs seconds per test and tests do not rely on
    # fresh layer names.
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def logical_cpus():
    """The names of the two logical CPU devices."""
    return [d.name for d in tf.config.list_logical_devices("CPU")][:NUM_LOGICAL_CPUS]


def pytest_collection_modifyitems(items):
    """Files with the most `slow` tests first, the rest in their usual order.

    `-n 2 --dist=loadfile` hands out whole files in collection order as the
    workers free up; a long file collected last leaves one core idle while the
    other finishes it. Heavy files first keeps both busy to the end.
    """
    files, order = {}, {}
    for item in items:
        files.setdefault(item.path, []).append(item)
        order.setdefault(item.path, len(order))
    weight = {path: sum(1 for item in group if item.get_closest_marker("slow")) for path, group in files.items()}
    ranked = sorted(files, key=lambda path: (-weight[path], order[path]))
    items[:] = [item for path in ranked for item in files[path]]
