"""Two-replica helpers for the contrastive loss tests (see `tests.conftest.mirrored_strategy`)."""
import tensorflow as tf

from tests.conftest import mirrored_strategy  # noqa: F401  (re-exported for the loss tests)
from vt_keras.distributed import replica_gather


def distribute(strategy, array):
    """Splits `array` along axis 0 into one equal slice per replica."""
    per_replica = len(array) // strategy.num_replicas_in_sync
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * per_replica:][:per_replica])
    )


def mirrored_loss_and_grads(strategy, fn, inputs, weights):
    """Per-replica losses and the replica-summed gradient of `loss / replicas`.

    The first two inputs are multiplied by a shared variable initialised to
    `weights`; `fn(*inputs, gather=replica_gather)` returns the loss.
    """
    with strategy.scope():
        variable = tf.Variable(weights)
    dist = [distribute(strategy, x) for x in inputs]

    def replica_step(*local):
        with tf.GradientTape() as tape:
            loss = fn(*[x @ variable for x in local[:2]], *local[2:], gather=replica_gather)
            contribution = loss / tf.distribute.get_replica_context().num_replicas_in_sync
        return loss, tape.gradient(contribution, variable)

    @tf.function
    def step(*args):
        losses, grads = strategy.run(replica_step, args=args)
        return strategy.experimental_local_results(losses), strategy.reduce("SUM", grads, axis=None)

    losses, grad = step(*dist)
    return [float(x) for x in losses], grad.numpy()


def single_device_loss_and_grads(fn, inputs, weights):
    """The loss and gradient of `fn` on the whole batch on one device."""
    variable = tf.Variable(weights)
    with tf.GradientTape() as tape:
        loss = fn(*[tf.constant(x) @ variable for x in inputs[:2]], *[tf.constant(x) for x in inputs[2:]])
    return float(loss), tape.gradient(loss, variable).numpy()
