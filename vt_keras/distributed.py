"""Cross-replica helpers that layers, losses and the trainer use.

A loss that needs the whole global batch (contrastive losses, CKA) takes a
`gather` argument. `replica_gather` is the default the trainer passes: it is
the identity on one device and an all-gather along the batch axis inside a
replica of a multi-replica `tf.distribute` strategy. Its gradient sums the
incoming gradients over replicas and keeps each replica's own slice, so a
replica that computes the global loss must contribute `loss / num_replicas()`
to the summed gradients; the trainer does that scaling (see
`vt_keras.train.loop`).

Backend-neutral: on JAX and PyTorch there is one replica (their users shard
with their own tools), and TensorFlow is imported only on its backend, by
`vt_keras.backend`.
"""
from keras import ops

from vt_keras.backend import all_gather, num_replicas, replica_id  # noqa: F401  (public here)
from vt_keras.ops import identity_gather  # noqa: F401  (the single-device `gather`)


def replica_gather(x, axis=0):
    """Concatenates `x` over all replicas along `axis`, in replica order.

    Identity outside a strategy or with one replica, so library code can call
    it unconditionally.
    """
    return all_gather(x, axis=axis)


def local_slice(global_tensor, local_size, axis=0):
    """This replica's rows of a gathered tensor (all rows outside a strategy)."""
    if num_replicas() <= 1:
        return global_tensor
    start = replica_id() * local_size
    return ops.take(global_tensor, start + ops.arange(local_size, dtype="int32"), axis=axis)
