"""`CrossCLRLoss`: the Keras `Loss` of CrossCLR, with the optional queue.

The queue variant (Zolfaghari et al., ICCV 2021, used on the clip/sentence
loss) keeps the detached embeddings and raw features of the last `queue_size`
samples. They are extra negatives for the current batch (cross-modal and
intra-modal, pruned like batch samples) and count in every sample's
proximity, but are never anchors. There is no momentum encoder.

The four queues share one write pointer, so row q of each always belongs to
the same sample, also across wrap-around; only filled slots are used. Under a
`tf.distribute` strategy the enqueued rows are the gathered global batch,
every replica makes the same update, and the variables aggregate with
ONLY_FIRST_REPLICA, so all replicas hold the same queue. The loss is a
`tf.Module` so that `tf.train.Checkpoint(loss=loss)` saves the queue: Keras
has no trackable base for a `Loss`.
"""
import keras
import tensorflow as tf
from keras import ops

from vt_keras.distributed import replica_gather
from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.contrastive import unpack
from vt_keras.losses.crossclr import DEFAULTS, check_inputs, crossclr_from_pool, crossclr_options
from vt_keras.ops import identity_gather

INPUT_KEYS = ("video_emb", "text_emb", "video_features", "text_features")


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossCLRLoss(keras.losses.Loss, tf.Module):
    """CrossCLR loss (see `crossclr_loss`) with an optional queue of negatives.

    Trainers call `loss.compute(video_emb, text_emb, video_features,
    text_features, gather=replica_gather)` directly. `loss(y_true, y_pred)`
    ignores `y_true` and takes `y_pred` as a dict with the keys
    `"video_emb"`, `"text_emb"`, `"video_features"`, `"text_features"` (or a
    sequence of the four in that order); under a strategy it gathers with
    `replica_gather`. Keras' `compile()` maps one loss over each output of a
    multi-output model, so `fit()` users add it from a layer instead:
    `self.add_loss(loss.compute(..., gather=replica_gather))`.

    With a queue, create the loss (and call `build`) inside
    `strategy.scope()`, before the first `tf.function` step; an eager first
    call builds it too. Each `compute` uses the queue as it was, then
    enqueues the batch.

    Args:
        temperature, weight_temperature, intra_weight, prune_threshold,
        reference_compat, num_positives, positive_weight: as in
            `crossclr_loss`.
        queue_size: number of past samples kept as negatives (0: no queue).
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call: `compute([B, d], [B, d], [B, F_v], [B, F_t], gather=None)` → scalar.

    Example:
    >>> loss = CrossCLRLoss(**PRESETS["youcook2"])  # queue of 5000
    >>> value = loss.compute(v_emb, t_emb, v_feat, t_feat)
    """

    def __init__(self, temperature=DEFAULTS["temperature"],
                 weight_temperature=DEFAULTS["weight_temperature"],
                 intra_weight=DEFAULTS["intra_weight"],
                 prune_threshold=DEFAULTS["prune_threshold"],
                 reference_compat=DEFAULTS["reference_compat"], queue_size=0,
                 num_positives=DEFAULTS["num_positives"],
                 positive_weight=DEFAULTS["positive_weight"], name="crossclr",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._options = crossclr_options(temperature, weight_temperature, intra_weight,
                                         prune_threshold, reference_compat, num_positives,
                                         positive_weight, where="CrossCLRLoss")
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 0:
            raise ConfigError(f"CrossCLRLoss: queue_size must be an integer ≥ 0; got {queue_size!r}")
        self.temperature = temperature
        self.weight_temperature = weight_temperature
        self.intra_weight = intra_weight
        self.prune_threshold = prune_threshold
        self.reference_compat = reference_compat
        self.queue_size = queue_size
        self.num_positives = num_positives
        self.positive_weight = positive_weight
        self.queues = None  # [video_emb, text_emb, video_features, text_features]
        self.queue_pointer = None
        self.queue_count = None

    # `keras.losses.Loss` assigns `self.name`; `tf.Module.name` is read-only.
    @property
    def name(self):
        return self._loss_name

    @name.setter
    def name(self, value):
        self._loss_name = value

    @property
    def built(self):
        return self.queue_size == 0 or self.queues is not None

    def build(self, video_emb_dim, text_emb_dim, video_feature_dim, text_feature_dim):
        """Creates the queue variables for inputs with these last dimensions."""
        if self.built:
            return
        dims = (video_emb_dim, text_emb_dim, video_feature_dim, text_feature_dim)
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise UserError(f"CrossCLRLoss.build: the queue needs static positive widths; got {dims}")

        def variable(shape, dtype, name):
            return keras.Variable(initializer="zeros", shape=shape, dtype=dtype, trainable=False,
                                  autocast=False, aggregation="only_first_replica", name=name)

        self.queues = [variable((self.queue_size, d), "float32", f"queue_{key}")
                       for d, key in zip(dims, INPUT_KEYS)]
        # int64 like Keras' own step counters, which also keeps them on any device.
        self.queue_pointer = variable((), "int64", "queue_pointer")
        self.queue_count = variable((), "int64", "queue_count")

    def reset_queue(self):
        """Empties the queue (the rows stay but are no longer used)."""
        if self.queues is not None:
            self.queue_pointer.assign(0)
            self.queue_count.assign(0)

    def compute(self, video_emb, text_emb, video_features, text_features, gather=None):
        """The loss of one batch; see the class docstring."""
        inputs = check_inputs("CrossCLRLoss", video_emb, text_emb, video_features, text_features)
        gather = gather or identity_gather
        batch = [gather(x) for x in inputs]
        if self.queue_size == 0:
            return crossclr_from_pool(batch, None, self._options)
        if not self.built:
            self.build(*[x.shape[-1] for x in inputs])
        for x, queue, key in zip(batch, self.queues, INPUT_KEYS):
            if x.shape[-1] is not None and x.shape[-1] != queue.shape[-1]:
                raise UserError(
                    f"CrossCLRLoss: {key} has width {x.shape[-1]} but the queue was built for "
                    f"{queue.shape[-1]}"
                )
        filled = ops.arange(self.queue_size, dtype="int64") < self.queue_count.value
        memory = [ops.convert_to_tensor(q) for q in self.queues] + [filled]
        loss = crossclr_from_pool(batch, memory, self._options)
        self._enqueue([ops.stop_gradient(ops.cast(x, "float32")) for x in batch])
        return loss

    def _enqueue(self, rows):
        size = self.queue_size
        count = ops.cast(ops.shape(rows[0])[0], "int64")
        # Rows beyond the capacity would overwrite each other: keep the last ones.
        kept = ops.minimum(count, size)
        skipped = count - kept
        slots = (self.queue_pointer.value + skipped + ops.arange(kept, dtype="int64")) % size
        for queue, new in zip(self.queues, rows):
            queue.assign(ops.scatter_update(queue.value, slots[:, None], new[skipped:]))
        self.queue_pointer.assign((self.queue_pointer.value + count) % size)
        self.queue_count.assign(ops.minimum(self.queue_count.value + count, size))

    def call(self, y_true, y_pred):
        del y_true
        inputs = unpack(y_pred, INPUT_KEYS, "CrossCLRLoss")
        return self.compute(*inputs, gather=replica_gather)

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature,
            weight_temperature=self.weight_temperature,
            intra_weight=self.intra_weight,
            prune_threshold=self.prune_threshold,
            reference_compat=self.reference_compat,
            queue_size=self.queue_size,
            num_positives=self.num_positives,
            positive_weight=self.positive_weight,
        )
        return config


def crossclr_local_global(local_loss, global_loss, local_inputs, global_inputs,
                          global_weight=0.6, gather=None):
    """The COOT-style objective `L_local + 0.6 · L_global` of the supplement.

    Args:
        local_loss: a `CrossCLRLoss` for clip/sentence embeddings (with a
            queue in the paper).
        global_loss: a `CrossCLRLoss` for video/paragraph embeddings (no queue).
        local_inputs: `(video_emb, text_emb, video_features, text_features)`
            of the clips and sentences.
        global_inputs: the same four for the videos and paragraphs.
        global_weight: weight of the global term (0.6 in the paper).
        gather: passed to both losses.

    Returns:
        A scalar.

    Example:
    >>> total = crossclr_local_global(CrossCLRLoss(queue_size=5000), CrossCLRLoss(),
    ...                               (c_emb, s_emb, c_feat, s_feat), (v_emb, p_emb, v_feat, p_feat))
    """
    if not isinstance(global_weight, (int, float)) or global_weight < 0:
        raise ConfigError(f"crossclr_local_global: global_weight must be a number ≥ 0; got {global_weight!r}")
    local = local_loss.compute(*local_inputs, gather=gather)
    return local + global_weight * global_loss.compute(*global_inputs, gather=gather)
