"""Cross-replica helpers that layers and losses may use.

A loss that needs the whole global batch (contrastive losses, CKA) takes a
`gather` argument. `replica_gather` is the default the trainer passes: it is
the identity on one device and an all-gather along the batch axis inside a
replica of a multi-replica strategy. Its gradient sums the incoming gradients
over replicas and keeps each replica's own slice, so a replica that computes
the global loss must contribute `loss / num_replicas()` to the summed
gradients; the trainer does that scaling (see `vt_keras.train.loop`).
"""
import tensorflow as tf

from vt_keras.ops import identity_gather  # noqa: F401  (the single-device `gather`)


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas():
    """Number of replicas in sync in the current replica context (1 outside)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def replica_id():
    """This replica's index as a scalar int32 tensor (0 outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def replica_gather(x, axis=0):
    """Concatenates `x` over all replicas along `axis`, in replica order.

    Identity outside a strategy or with one replica, so library code can call
    it unconditionally.
    """
    ctx = _replica_context()
    if ctx is None:
        return x
    return ctx.all_gather(x, axis=axis)


def local_slice(global_tensor, local_size, axis=0):
    """This replica's rows of a gathered tensor (all rows outside a strategy)."""
    ctx = _replica_context()
    if ctx is None:
        return global_tensor
    start = replica_id() * local_size
    return tf.gather(global_tensor, tf.range(start, start + local_size), axis=axis)
