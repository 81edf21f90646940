"""The one switch between the backend-neutral library and code tied to one framework.

`vt_keras.layers`, `vt_keras.losses`, `vt_keras.ops` and `vt_keras.distributed`
are written with `keras.ops` and run on TensorFlow, JAX and PyTorch. The few
things `keras.ops` does not offer live in this package, one module per
framework, and are reached only through the functions below:

- the replica context of a `tf.distribute` strategy (one replica elsewhere:
  JAX and PyTorch users shard with their own tools);
- the soft-DTW kernels, each with a hand-written backward pass;
- stateless uniform draws from a seed tensor;
- the value and gradient of a function, for tests and tools.

A framework's module is imported on first use, for the running Keras backend
only: a JAX or PyTorch install need not have TensorFlow.
"""
import importlib
import sys

import keras
from keras import ops

_SOFT_DTW_KERNELS = {
    "tensorflow": "vt_keras.backend.tensorflow_soft_dtw",
    "jax": "vt_keras.backend.jax_soft_dtw",
    "torch": "vt_keras.backend.torch_soft_dtw",
}
_BACKENDS = {
    "tensorflow": "vt_keras.backend.tensorflow_backend",
    "jax": "vt_keras.backend.jax_backend",
    "torch": "vt_keras.backend.torch_backend",
}
SUPPORTED = tuple(_SOFT_DTW_KERNELS)


def name():
    """The running Keras backend: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def _module(table, what):
    backend = name()
    if backend not in table:
        raise NotImplementedError(
            f"vt_keras: {what} runs on the {', '.join(SUPPORTED)} backends; KERAS_BACKEND is {backend!r}")
    # Lazy: the module imports its framework, which other backends' installs may lack. Once
    # imported it is taken from sys.modules, so that a call traced by AutoGraph (inside a
    # tf.function) never steps into importlib, whose frozen source AutoGraph cannot read (a warning).
    module = sys.modules.get(table[backend])
    return module if module is not None else importlib.import_module(table[backend])


def _tensorflow_replicas():
    # Only TensorFlow has a replica context to ask.
    return _module(_BACKENDS, "replicas") if name() == "tensorflow" else None


def num_replicas():
    """Replicas in sync in the current `tf.distribute` replica context; 1 elsewhere."""
    replicas = _tensorflow_replicas()
    return 1 if replicas is None else replicas.num_replicas()


def replica_id():
    """This replica's index as a scalar int32 tensor; 0 outside a strategy."""
    replicas = _tensorflow_replicas()
    return ops.convert_to_tensor(0, "int32") if replicas is None else replicas.replica_id()


def all_gather(x, axis=0):
    """`x` of every replica, concatenated along `axis` in replica order; `x` itself on one replica."""
    replicas = _tensorflow_replicas()
    return x if replicas is None else replicas.all_gather(x, axis)


def soft_dtw_kernel():
    """The running backend's soft-DTW kernel module (`soft_dtw`, `soft_dtw_alignment`)."""
    return _module(_SOFT_DTW_KERNELS, "soft-DTW")


def stateless_uniform(shape, seed, dtype="float32"):
    """Uniform [0, 1) draws that are a pure function of `seed` (int32 `[2]`).

    Unlike `keras.random` with a `SeedGenerator`, no state variable changes,
    so replicas and resumed runs can derive their draws from a step counter.
    """
    return _module(_BACKENDS, "stateless random draws").stateless_uniform(shape, seed, dtype)


def counter_dtype():
    """The integer dtype of step-like counters: int64 where available (TensorFlow, PyTorch).

    JAX has 64-bit integers only with `jax_enable_x64`, so counters are int32 there.
    """
    return "int32" if name() == "jax" else "int64"


def value_and_grad(fn, args):
    """`fn(*args)` and its gradients with respect to every argument, with the backend's autodiff.

    Args:
        fn: a function of tensors returning a scalar; pure (no variable
            updates) on JAX, where it is compiled with `jax.jit`.
        args: a list of float arrays.

    Returns:
        `(value, [gradient per argument])`, backend tensors.
    """
    return _module(_BACKENDS, "value_and_grad").value_and_grad(fn, list(args))


if name() == "tensorflow":
    # TensorFlow is loaded already (it is Keras' backend); its module is imported now rather than on
    # first use, which may be inside a tf.function, where AutoGraph would trace into importlib.
    importlib.import_module(_BACKENDS["tensorflow"])
