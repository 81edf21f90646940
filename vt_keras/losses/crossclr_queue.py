"""`CrossCLRLoss`: the Keras `Loss` of CrossCLR, with the optional queue (`CrossCLRQueue`).

The queue variant (Zolfaghari et al., ICCV 2021, used on the clip/sentence
loss) keeps the detached embeddings and raw features of the last `queue_size`
samples. They are extra negatives for the current batch (cross-modal and
intra-modal, pruned like batch samples) and count in every sample's
proximity, but are never anchors. There is no momentum encoder.

The queue's state is a `CrossCLRQueue`, a Keras layer: its variables are
saved, restored and (on JAX) threaded through a jitted step like any layer's.
The four queues share one write pointer, so row q of each always belongs to
the same sample, also across wrap-around; only filled slots are used. Under a
`tf.distribute` strategy the enqueued rows are the gathered global batch,
every replica makes the same update, and the variables aggregate with
ONLY_FIRST_REPLICA, so all replicas hold the same queue.
"""
import keras
from keras import ops

from vt_keras.backend import counter_dtype
from vt_keras.distributed import replica_gather
from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.contrastive import unpack
from vt_keras.losses.crossclr import DEFAULTS, check_inputs, crossclr_from_pool, crossclr_options
from vt_keras.ops import identity_gather

INPUT_KEYS = ("video_emb", "text_emb", "video_features", "text_features")


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossCLRQueue(keras.layers.Layer):
    """A ring buffer of CrossCLR negatives: past samples' embeddings and raw features.

    Calling it returns the memory as it was and then writes the batch into
    it, oldest rows first overwritten; a batch larger than the queue keeps its
    last `size` rows. Nothing is trainable and no gradient flows through it.

    Args:
        size: the number of samples kept, ≥ 1.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Call: `queue([video_emb [B, d], text_emb [B, d], video_features [B, F_v],
    text_features [B, F_t]])` → the four stored tensors `[size, ·]` (float32)
    and `filled`, a `[size]` boolean of the slots written so far.

    Example:
    >>> queue = CrossCLRQueue(5000)
    >>> *stored, filled = queue([v_emb, t_emb, v_feat, t_feat])

    Reference: Zolfaghari et al., "CrossCLR: Cross-modal Contrastive Learning
    For Multi-modal Video Representations", ICCV 2021 (the queue variant).
    """

    def __init__(self, size, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the stored rows stay float32 under mixed precision
        super().__init__(trainable=False, **kwargs)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"CrossCLRQueue: size must be an integer ≥ 1; got {size!r}")
        self.size = size
        self.pointer = None
        self.count = None

    @property
    def queues(self):
        """The stored rows, `[video_emb, text_emb, video_features, text_features]`; None before `build`."""
        if not self.built:
            return None
        return [getattr(self, f"queue_{key}") for key in INPUT_KEYS]

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 4:
            raise UserError(f"{self.name} (CrossCLRQueue): expected the four inputs {list(INPUT_KEYS)}; "
                            f"found shape {input_shape}")
        dims = tuple(shape[-1] for shape in input_shape)
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise UserError(f"{self.name} (CrossCLRQueue): the queue needs static positive widths; got {dims}")

        def variable(shape, dtype, name):
            return self.add_weight(shape=shape, initializer="zeros", dtype=dtype, trainable=False,
                                   autocast=False, aggregation="only_first_replica", name=name)

        # One attribute each: a list attribute would hide them from TensorFlow checkpoints.
        for d, key in zip(dims, INPUT_KEYS):
            setattr(self, f"queue_{key}", variable((self.size, d), "float32", f"queue_{key}"))
        # Integer counters like Keras' own step counters (int64 where the backend has it).
        self.pointer = variable((), counter_dtype(), "queue_pointer")
        self.count = variable((), counter_dtype(), "queue_count")

    def call(self, rows):
        for x, queue, key in zip(rows, self.queues, INPUT_KEYS):
            if x.shape[-1] is not None and x.shape[-1] != queue.shape[-1]:
                raise UserError(f"{self.name} (CrossCLRQueue): {key} has width {x.shape[-1]} but the "
                                f"queue was built for {queue.shape[-1]}")
        rows = [ops.stop_gradient(ops.cast(x, "float32")) for x in rows]
        dtype = counter_dtype()
        filled = ops.arange(self.size, dtype=dtype) < self.count.value
        memory = [ops.stop_gradient(ops.convert_to_tensor(q.value)) for q in self.queues] + [filled]
        # A static batch size stays a Python int (JAX needs static slice sizes);
        # TensorFlow also takes a dynamic one.
        count = rows[0].shape[0]
        if count is None:
            count = ops.shape(rows[0])[0]
        # Rows beyond the capacity would overwrite each other: keep the last ones.
        kept = min(count, self.size) if isinstance(count, int) else ops.minimum(count, self.size)
        skipped = count - kept
        slots = (self.pointer.value + ops.cast(skipped, dtype) + ops.arange(kept, dtype=dtype)) % self.size
        for queue, new in zip(self.queues, rows):
            queue.assign(ops.scatter_update(queue.value, slots[:, None], new[skipped:]))
        self.pointer.assign((self.pointer.value + ops.cast(count, dtype)) % self.size)
        self.count.assign(ops.minimum(self.count.value + ops.cast(count, dtype), self.size))
        return memory

    def reset(self):
        """Empties the queue (the rows stay but are no longer used)."""
        if self.built:
            self.pointer.assign(0)
            self.count.assign(0)

    def compute_output_spec(self, rows):
        return [keras.KerasTensor((self.size, x.shape[-1]), "float32") for x in rows] + [
            keras.KerasTensor((self.size,), "bool")]

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size)
        return config


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossCLRLoss(keras.losses.Loss):
    """CrossCLR loss (see `crossclr_loss`) with an optional queue of negatives.

    Trainers call `loss.compute(video_emb, text_emb, video_features,
    text_features, gather=replica_gather)` directly. `loss(y_true, y_pred)`
    ignores `y_true` and takes `y_pred` as a dict with the keys
    `"video_emb"`, `"text_emb"`, `"video_features"`, `"text_features"` (or a
    sequence of the four in that order); under a strategy it gathers with
    `replica_gather`. Keras' `compile()` maps one loss over each output of a
    multi-output model, so `fit()` users add it from a layer instead:
    `self.add_loss(loss.compute(..., gather=replica_gather))`.

    With a queue, `loss.queue` is a `CrossCLRQueue` layer that holds the
    state: create the loss (and call `build`) inside `strategy.scope()`,
    before the first `tf.function` step (an eager first call builds it too);
    checkpoint `loss.queue` (`tf.train.Checkpoint(queue=loss.queue)`); on
    JAX, make it a sublayer of the model (an attribute of the layer that
    calls `compute`) so that `fit` carries its state. Each `compute` uses the
    queue as it was, then enqueues the batch.

    Args:
        temperature, weight_temperature, intra_weight, prune_threshold,
        reference_compat, num_positives, positive_weight: as in
            `crossclr_loss` (defaults: `vt_keras.losses.crossclr.DEFAULTS`).
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
        self.options = crossclr_options(temperature, weight_temperature, intra_weight,
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
        self.queue = CrossCLRQueue(queue_size, name=f"{name}_queue") if queue_size else None

    # The queue's variables, under the names this class has always had.
    @property
    def queues(self):
        return None if self.queue is None else self.queue.queues

    @property
    def queue_pointer(self):
        return None if self.queue is None else self.queue.pointer

    @property
    def queue_count(self):
        return None if self.queue is None else self.queue.count

    @property
    def built(self):
        return self.queue is None or self.queue.built

    def build(self, video_emb_dim, text_emb_dim, video_feature_dim, text_feature_dim):
        """Creates the queue variables for inputs with these last dimensions."""
        if not self.built:
            dims = (video_emb_dim, text_emb_dim, video_feature_dim, text_feature_dim)
            self.queue.build([(None, d) for d in dims])

    def reset_queue(self):
        """Empties the queue (the rows stay but are no longer used)."""
        if self.queue is not None:
            self.queue.reset()

    def compute(self, video_emb, text_emb, video_features, text_features, gather=None):
        """The loss of one batch; see the class docstring."""
        inputs = check_inputs("CrossCLRLoss", video_emb, text_emb, video_features, text_features)
        gather = gather or identity_gather
        batch = [gather(x) for x in inputs]
        if self.queue is None:
            return crossclr_from_pool(batch, None, self.options)
        return crossclr_from_pool(batch, self.queue(batch), self.options)

    def stateless_compute(self, queue_state, video_emb, text_emb, video_features, text_features,
                          gather=None):
        """`compute` as a pure function of the queue's state, for `jax.jit`-style steps.

        Args:
            queue_state: the values of `loss.queue.non_trainable_variables`
                (build the loss first); ignored without a queue.
            video_emb, text_emb, video_features, text_features, gather: as
                for `compute`.

        Returns:
            `(loss, new_queue_state)`; the queue's variables are not changed.

        Example:
        >>> state = [v.value for v in loss.queue.non_trainable_variables]
        >>> value, state = loss.stateless_compute(state, v_emb, t_emb, v_feat, t_feat)
        """
        inputs = check_inputs("CrossCLRLoss", video_emb, text_emb, video_features, text_features)
        gather = gather or identity_gather
        batch = [gather(x) for x in inputs]
        if self.queue is None:
            return crossclr_from_pool(batch, None, self.options), queue_state
        if not self.queue.built:
            raise UserError("CrossCLRLoss.stateless_compute: build the loss first (loss.build(...)), so "
                            "that loss.queue.non_trainable_variables exist")
        memory, queue_state = self.queue.stateless_call([], queue_state, batch)
        return crossclr_from_pool(batch, memory, self.options), queue_state

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
