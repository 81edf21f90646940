"""Modality alignment: a pass-through layer whose loss is `-λ · CKA`."""
import keras
from keras import ops

from vt_keras.distributed import num_replicas, replica_gather, replica_id
from vt_keras.errors import ConfigError, UserError
from vt_keras.layers import checks
from vt_keras.losses.cka import KERNELS, cka, min_samples

PAIRINGS = ("position", "example")


@keras.saving.register_keras_serializable(package="vt_keras")
class CKAAlignment(keras.layers.Layer):
    """`-weight · CKA(video, text)` as a loss of the model; returns its inputs.

    The Modality Alignment of Yun et al. (LREC 2022): N vectors are taken from
    each modality's sequence so that the counts match, and the CKA between
    them is maximised as an auxiliary objective. Put the layer on the two
    embedding sequences, before the cross-modal fusion; its outputs are its
    inputs, unchanged, so it sits anywhere in a functional graph.

    Which vectors. CKA compares the inter-example structure of two sets of
    rows, so row i of one side must come from the same place as row i of the
    other (the correspondence that cosine or attention training learns):
    - `num_samples=None` (default): one vector per example from each
      modality, the mean of its valid frames, so row i of both sides comes
      from example i. Deterministic; examples with no valid frame on either
      side are left out.
    - `num_samples=N`: N rows drawn at random from the whole batch, without
      replacement (with fewer than N eligible rows, all of them and no
      repeats), the paper's "N-many representation vectors" sampled from
      both modalities. `pairing` says which rows correspond:
      - `"position"` (default): N (example, frame) positions valid in both
        modalities; row i of both sides is frame t of video b, for the same
        (b, t). For modalities on one time axis (YouTube-8M's video and
        audio frames). Both sequences must have the same length; a pooled
        `[B, d]` side counts as its vector at every frame.
      - `"example"`: N valid frames of the first modality (of examples with
        a valid frame in the second), and with each a frame drawn uniformly
        from the valid frames of the same example in the second; row i of both sides comes from video b. For sequences
        of different lengths (frames and words); a second-modality frame can
        be paired with several frames of its example.
      The paper does not say how its samples are paired; drawing each side
      independently would pair unrelated rows, whose CKA says nothing.
      Drawn rows are returned in batch order.
    - pooled `[B, d]` inputs (both sides): every row, nothing to sample.
    Padded positions are never used.

    Global batch: the vectors (and their validity) go through
    `gather(x, axis=0)` before CKA; the default `None` is
    `vt_keras.distributed.replica_gather`, the identity on one device and an
    all-gather inside a multi-replica strategy, so two replicas compute the
    CKA of the global batch. `num_samples` counts rows of that global batch:
    each of R replicas draws `ceil(num_samples / R)` and the last replicas
    leave out the rows over `num_samples`.

    The loss: by default the layer calls `add_loss(-weight · CKA)`, which is
    what `fit()` and a loop that adds `model.losses` expect, on one device
    and on every backend. Under a multi-replica `tf.distribute` strategy
    Keras keeps one loss list per layer for all replicas, so each replica's
    `model.losses` would hold every replica's term: there, call the layer
    with `return_loss=True`, which returns the term instead of adding it,
    and add it to the replica's loss yourself (it is a global scalar: divide
    it by the number of replicas, as `vt_keras.train.task.StepContext`'s
    `global_scalar` does). Without `return_loss`, a multi-replica call raises `UserError`.

    Tracked values: the metric `cka` (a `keras.metrics.Mean`, shown by `fit`;
    batches with fewer valid rows than the estimator needs are not counted)
    and the variable `last_cka`, the value of the latest call, for summaries.

    Args:
        weight: λ, the loss weight; 0.1 in the paper's synthetic and TVQA+
            runs, 0.2 on TVQA, 0.05 for captioning.
        num_samples: rows of the global batch per CKA, or None (see above).
            At least 2 (4 when debiased).
        pairing: with `num_samples`, which rows correspond: `"position"`
            (the same frame of the same video in both modalities) or
            `"example"` (a frame of the same video in each); see above.
        kernel: `"linear"` (the paper's choice) or `"rbf"`.
        debiased: use the unbiased HSIC estimator (see `vt_keras.losses.cka`).
        rbf_threshold: θ of the RBF bandwidth `σ² = θ² · median(D²)`.
        gather: `gather(x, axis=0)` giving the global batch; None for
            `replica_gather`. Save/load keeps only registered serializable
            functions.
        seed: seed of the sampling draws (only used with `num_samples`).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call: `layer((x_seq, y_seq), mask=(x_mask, y_mask), return_loss=False)`
    with `x_seq` `[B, T1, d1]`, `y_seq` `[B, T2, d2]` (or pooled `[B, d1]`,
    `[B, d2]`) and boolean masks `[B, T1]`, `[B, T2]` (`[B]` for pooled; None
    for all valid); `T1 == T2` for `pairing="position"` with `num_samples` → `(x_seq, y_seq)` unchanged, and with `return_loss=True`
    also the scalar float32 term `-weight · CKA` (then not added as a loss).

    Example:
    >>> video, text = video_encoder(frames), text_encoder(tokens)
    >>> video, text = CKAAlignment(weight=0.1)((video, text), mask=(fm, tm))
    >>> # the paper's sampling: 256 frames drawn from the batch, same positions in both
    >>> video, audio = CKAAlignment(weight=0.1, num_samples=256)((video, audio), mask=(fm, fm))
    >>> fused = cross_modal_attention(video, text)
    >>> # under a multi-replica strategy:
    >>> video, text, alignment_loss = CKAAlignment(weight=0.1)((video, text), return_loss=True)

    Reference: Yun et al., "Modality Alignment between Deep Representations
    for Effective Video-and-Language Learning", LREC 2022; Kornblith et al.,
    "Similarity of Neural Network Representations Revisited", ICML 2019.
    """

    def __init__(
        self,
        weight=0.1,
        num_samples=None,
        pairing="position",
        kernel="linear",
        debiased=False,
        rbf_threshold=1.0,
        gather=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel not in KERNELS:
            raise ConfigError(f"CKAAlignment: kernel must be one of {KERNELS}; got {kernel!r}")
        if num_samples is not None and (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, int)
            or num_samples < min_samples(debiased)
        ):
            raise ConfigError(
                f"CKAAlignment: num_samples must be None or an integer ≥ {min_samples(debiased)} "
                f"for the {'debiased' if debiased else 'biased'} estimator; got {num_samples!r}"
            )
        if pairing not in PAIRINGS:
            raise ConfigError(f"CKAAlignment: pairing must be one of {PAIRINGS}; got {pairing!r}")
        if not rbf_threshold > 0:
            raise ConfigError(f"CKAAlignment: rbf_threshold must be > 0; got {rbf_threshold!r}")
        self.weight = float(weight)
        self.num_samples = num_samples
        self.pairing = pairing
        self.kernel = kernel
        self.debiased = debiased
        self.rbf_threshold = rbf_threshold
        self.gather = gather
        self.seed = seed
        self.supports_masking = True
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.cka_tracker = keras.metrics.Mean(name="cka")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not all(
                isinstance(s, (list, tuple)) for s in input_shape):
            raise checks.shape_error(self, "inputs", "a pair (x_seq, y_seq)", f"shape {input_shape}")
        for name, shape in zip(("x_seq", "y_seq"), input_shape):
            checks.tensor_shape(self, shape, name, (3, 2), known_features=False)
        x_shape, y_shape = input_shape
        if (self.num_samples is not None and self.pairing == "position" and len(x_shape) == len(y_shape) == 3
                and None not in (x_shape[1], y_shape[1]) and x_shape[1] != y_shape[1]):
            raise checks.shape_error(
                self, "(x_seq, y_seq)", "two sequences of one length for pairing='position' (the same frames "
                "in both; use pairing='example' for sequences of different lengths)",
                f"lengths {x_shape[1]} and {y_shape[1]}")
        # Every replica computes the same global value; keep the first's.
        self.last_cka = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="last_cka",
            aggregation="only_first_replica",
        )

    def call(self, inputs, mask=None, training=None, return_loss=False):
        x_seq, y_seq = inputs
        x_mask, y_mask = (None, None) if mask is None else mask
        x, y, valid = self._vectors(x_seq, y_seq, x_mask, y_mask)
        gather = replica_gather if self.gather is None else self.gather
        x, y, valid = gather(x, axis=0), gather(y, axis=0), gather(valid, axis=0)
        value = cka(
            x,
            y,
            kernel=self.kernel,
            debiased=self.debiased,
            rbf_threshold=self.rbf_threshold,
            mask=valid > 0.5,
        )
        loss = -self.weight * value
        counted = ops.cast(ops.sum(valid) >= min_samples(self.debiased), "float32")
        self.cka_tracker.update_state(value, sample_weight=counted)
        self.last_cka.assign(ops.where(counted > 0, value, self.last_cka.value))
        if return_loss:
            return x_seq, y_seq, loss
        if num_replicas() > 1:
            raise UserError(
                f"{self.name} (CKAAlignment): called by one of {num_replicas()} replicas without "
                "return_loss=True; add_loss would give every replica all replicas' terms. "
                "Call it with return_loss=True and add the returned term / num_replicas to the loss")
        self.add_loss(loss)
        return (x_seq, y_seq)

    def _vectors(self, x_seq, y_seq, x_mask, y_mask):
        """The rows CKA compares: `[n, d1]`, `[n, d2]` and their validity `[n]`."""
        xs, xm = _as_sequence(x_seq, x_mask)
        ys, ym = _as_sequence(y_seq, y_mask)
        pooled = len(x_seq.shape) == 2 and len(y_seq.shape) == 2
        if self.num_samples is None or pooled:
            x_count, y_count = ops.sum(xm, axis=1), ops.sum(ym, axis=1)
            x = ops.sum(xs, axis=1) / ops.maximum(x_count, 1.0)[:, None]
            y = ops.sum(ys, axis=1) / ops.maximum(y_count, 1.0)[:, None]
            valid = ops.cast((x_count > 0) & (y_count > 0), "float32")
            return x, y, valid
        # Each replica draws ceil(N / R) rows; the last ones drop what is
        # over N, so the gathered batch holds N rows for any R.
        replicas = num_replicas()
        local = -(-self.num_samples // replicas)
        first_row = replica_id() * local
        keep = ops.cast(first_row + ops.arange(local, dtype="int32") < self.num_samples, "float32")
        if self.pairing == "position":
            xs, xm, ys, ym = _on_one_time_axis(xs, xm, ys, ym)
            positions, valid = self._draw(xm * ym, local, replicas)
            x, y = _rows(xs, positions), _rows(ys, positions)
        else:
            has_y = ops.cast(ops.sum(ym, axis=1, keepdims=True) > 0, "float32")
            positions, valid = self._draw(xm * has_y, local, replicas)
            x = _rows(xs, positions)
            # A uniform valid frame of the same example: the largest random
            # key among that example's valid frames of the second modality.
            example = positions // ops.shape(xs)[1]
            keys = keras.random.uniform((replicas, local, ops.shape(ys)[1]), seed=self.seed_generator)
            keys = ops.take(keys, replica_id(), axis=0)
            keys = ops.where(ops.take(ym, example, axis=0) > 0, keys, -1.0)
            frame = ops.cast(ops.argmax(keys, axis=1), example.dtype)
            y = _rows(ys, example * ops.shape(ys)[1] + frame)
        valid = ops.cast(valid, "float32")
        return x * valid[:, None], y * valid[:, None], valid * keep

    def _draw(self, eligible, count, replicas):
        """`count` flat positions where `eligible` `[B, T]` is 1, at random, in batch order, and their validity."""
        eligible = ops.reshape(eligible, (-1,))
        size = ops.shape(eligible)[0]
        # Random keys rank the eligible positions; the others get -1 and sort
        # last. One row of keys per replica so that replicas draw differently.
        keys = keras.random.uniform((replicas, size), seed=self.seed_generator)
        keys = ops.take(keys, replica_id(), axis=0)
        keys = ops.where(eligible > 0, keys, -1.0)
        # Extra -1 keys let top_k ask for more rows than the batch holds.
        keys = ops.concatenate([keys, -ops.ones((count,), keys.dtype)])
        top_keys, positions = ops.top_k(keys, k=count)
        valid = top_keys >= 0.0
        order = ops.argsort(ops.where(valid, positions, positions + size + count))
        positions, valid = ops.take(positions, order), ops.take(valid, order)
        return ops.minimum(positions, size - 1), valid

    def compute_output_spec(self, inputs, mask=None, training=None, return_loss=False):
        outputs = tuple(keras.KerasTensor(t.shape, dtype=t.dtype) for t in inputs)
        return outputs + (keras.KerasTensor((), dtype="float32"),) if return_loss else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "weight": self.weight,
                "num_samples": self.num_samples,
                "pairing": self.pairing,
                "kernel": self.kernel,
                "debiased": self.debiased,
                "rbf_threshold": self.rbf_threshold,
                "gather": None
                if self.gather is None
                else keras.saving.serialize_keras_object(self.gather),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("gather") is not None:
            config["gather"] = keras.saving.deserialize_keras_object(config["gather"])
        return cls(**config)


def _as_sequence(seq, mask):
    """`[B, T, d]` float32 with padding zeroed, and a float `[B, T]` mask."""
    seq = ops.cast(seq, "float32")
    if len(seq.shape) == 2:
        seq = seq[:, None, :]
        if mask is not None:
            mask = ops.reshape(mask, (-1, 1))
    if mask is None:
        mask = ops.ones(ops.shape(seq)[:2], "float32")
    mask = ops.cast(mask, "float32")
    # where, not a product: padding may hold inf or NaN.
    seq = ops.where(mask[..., None] > 0, seq, 0.0)
    return seq, mask


def _on_one_time_axis(xs, xm, ys, ym):
    """A pooled side (one frame) repeated over the other side's frames."""
    if xs.shape[1] == 1 and ys.shape[1] != 1:
        steps = ops.shape(ys)[1]
        xs, xm = ops.repeat(xs, steps, axis=1), ops.repeat(xm, steps, axis=1)
    elif ys.shape[1] == 1 and xs.shape[1] != 1:
        steps = ops.shape(xs)[1]
        ys, ym = ops.repeat(ys, steps, axis=1), ops.repeat(ym, steps, axis=1)
    return xs, xm, ys, ym


def _rows(seq, positions):
    """Rows `positions` of `seq` `[B, T, d]` flattened to `[B·T, d]`."""
    return ops.take(ops.reshape(seq, (-1, ops.shape(seq)[-1])), positions, axis=0)
