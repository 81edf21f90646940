"""TensorFlow's part of `vt_keras.backend`: the `tf.distribute` replica context, stateless draws, gradients."""
import tensorflow as tf


def _context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas():
    """Replicas in sync in the current replica context (1 outside one)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def replica_id():
    """This replica's index as a scalar int32 tensor (0 outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def all_gather(x, axis=0):
    """Concatenates `x` over the replicas along `axis`; `x` on one replica."""
    ctx = _context()
    return x if ctx is None else ctx.all_gather(x, axis=axis)


def stateless_uniform(shape, seed, dtype="float32"):
    return tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int32), dtype=dtype)


def value_and_grad(fn, args):
    args = [tf.convert_to_tensor(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        value = fn(*args)
    # An argument the value does not depend on gets zeros, as on the other backends.
    grads = tape.gradient(value, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value, grads
