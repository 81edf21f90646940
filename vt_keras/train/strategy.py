"""Choosing a `tf.distribute` strategy from a flag.

- `one`: one device (the first GPU, else the CPU).
- `mirrored`: `MirroredStrategy` over all local GPUs, or over N logical CPU
  devices when `num_cpu_devices > 1` (how the tests and a GPU-less machine
  exercise the multi-replica code path).
- `multi_worker`: `MultiWorkerMirroredStrategy`, cluster read from `TF_CONFIG`.
- `auto`: `multi_worker` when `TF_CONFIG` names more than one task, else
  `mirrored` when there are several GPUs or logical CPUs, else `one`.
"""
import json
import os

import tensorflow as tf

from vt_keras.errors import ConfigError

STRATEGIES = ("auto", "one", "mirrored", "multi_worker")


def configure_cpu_devices(num_cpu_devices):
    """Splits the CPU into `num_cpu_devices` logical devices.

    Must run before TensorFlow initialises its devices (before the first op).
    """
    if num_cpu_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
        )
    except RuntimeError as e:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != num_cpu_devices:
            raise ConfigError(
                f"--num_cpu_devices={num_cpu_devices}: TensorFlow already initialised "
                f"{current} CPU device(s); set it before any TensorFlow op runs"
            ) from e


def _tf_config():
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}); expected "
                          '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}') from e


def cluster_size():
    """Number of tasks in `TF_CONFIG`'s cluster (1 without one)."""
    cluster = _tf_config().get("cluster", {})
    return sum(len(v) for v in cluster.values()) or 1


def create_strategy(name="auto", num_cpu_devices=0):
    """Returns the `tf.distribute.Strategy` named by `name` (see module doc)."""
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy={name!r} is unknown; expected one of {', '.join(STRATEGIES)}")
    configure_cpu_devices(num_cpu_devices)
    if name == "auto":
        if cluster_size() > 1:
            name = "multi_worker"
        elif num_cpu_devices > 1 or len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one"
    if name != "multi_worker":
        # Listing logical devices initialises the runtime, which must not happen
        # before MultiWorkerMirroredStrategy configures collective ops.
        gpus = tf.config.list_logical_devices("GPU")
        if name == "one":
            return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
        if gpus:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    tfc = _tf_config()
    if not tfc.get("cluster"):
        raise ConfigError("--strategy=multi_worker needs TF_CONFIG with a cluster and a task; "
                          "TF_CONFIG is unset or has no 'cluster'")
    comm = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)


def is_chief(strategy):
    """True on the worker that writes summaries, metrics and the real checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (not has_chief) and task_type == "worker" and task_id == 0


def is_multi_worker(strategy):
    """True for a `MultiWorkerMirroredStrategy` over a cluster of two or more tasks."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    return sum(len(v) for v in resolver.cluster_spec().as_dict().values()) > 1


def worker_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_id is None:
        return 0
    return int(resolver.task_id)
