"""Classifier heads of the YouTube-8M models: mixture of experts and context gating."""
import keras
from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.layers import checks


@keras.saving.register_keras_serializable(package="vt_keras")
class MixtureOfExperts(keras.layers.Layer):
    """Per-class mixture of logistic experts, the YouTube-8M starter-code head.

    For every class c a softmax gate over `num_mixtures + 1` entries weighs
    `num_mixtures` sigmoid experts; the extra gate entry is a "no expert"
    option whose expert always says 0, so the model can push a class's
    probability down without driving every expert to 0:

        p_c(x) = Σ_{m < M} softmax(G x)_{c, m} · σ(E x + e)_{c, m}

    The gate has no bias (the softmax is shift-invariant per class, so a bias
    would only duplicate the dummy entry's role); the experts have one. Both
    kernels carry an L2 penalty of `l2_penalty`. Logits are cast to float32
    before the softmax and sigmoid, and the probabilities are returned in
    float32 whatever the layer's dtype policy, so a loss reads them exactly.

    Args:
        num_classes: int, number of output classes C.
        num_mixtures: int, experts per class M (the starter code's default
            is 2).
        l2_penalty: float, L2 regularisation factor of both kernels (1e-8 in
            the starter code).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: float tensor `[B, D]` (any leading axes are kept).

    Returns:
        float32 probabilities `[B, C]` in [0, 1).

    Example:
        >>> head = MixtureOfExperts(num_classes=3862, num_mixtures=2)
        >>> probs = head(keras.random.normal((4, 1024)))  # [4, 3862]

    Reference: the YouTube-8M starter code's `MoeModel` (Abu-El-Haija et al.,
    "YouTube-8M: A Large-Scale Video Classification Benchmark", 2016), after
    Jordan and Jacobs' hierarchical mixtures of experts.
    """

    def __init__(self, num_classes, num_mixtures=2, l2_penalty=1e-8, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ConfigError(f"MixtureOfExperts num_classes must be >= 1, got {num_classes}")
        if int(num_mixtures) < 1:
            raise ConfigError(
                f"MixtureOfExperts num_mixtures must be >= 1, got {num_mixtures}"
            )
        if float(l2_penalty) < 0:
            raise ConfigError(f"MixtureOfExperts l2_penalty must be >= 0, got {l2_penalty}")
        self.num_classes = int(num_classes)
        self.num_mixtures = int(num_mixtures)
        self.l2_penalty = float(l2_penalty)
        regularizer = keras.regularizers.L2(self.l2_penalty) if self.l2_penalty else None
        self.gate_dense = keras.layers.Dense(
            self.num_classes * (self.num_mixtures + 1),
            use_bias=False,
            kernel_regularizer=regularizer,
            dtype=self.dtype_policy,
            name="gate_dense",
        )
        self.expert_dense = keras.layers.Dense(
            self.num_classes * self.num_mixtures,
            kernel_regularizer=regularizer,
            dtype=self.dtype_policy,
            name="expert_dense",
        )

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise checks.shape_error(self, "inputs", "[batch, ..., features] with a known feature size",
                                     f"shape {tuple(input_shape)}")
        self.gate_dense.build(input_shape)
        self.expert_dense.build(input_shape)

    def call(self, inputs):
        lead = ops.shape(inputs)[:-1]
        gate_logits = ops.cast(self.gate_dense(inputs), "float32")
        expert_logits = ops.cast(self.expert_dense(inputs), "float32")
        gate_logits = ops.reshape(
            gate_logits, tuple(lead) + (self.num_classes, self.num_mixtures + 1)
        )
        expert_logits = ops.reshape(
            expert_logits, tuple(lead) + (self.num_classes, self.num_mixtures)
        )
        gates = ops.softmax(gate_logits, axis=-1)
        experts = ops.sigmoid(expert_logits)
        # The last gate entry is the dummy expert, whose output is 0.
        return ops.sum(gates[..., : self.num_mixtures] * experts, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_mixtures=self.num_mixtures,
            l2_penalty=self.l2_penalty,
        )
        return config


@keras.saving.register_keras_serializable(package="vt_keras")
class ContextGating(keras.layers.Layer):
    """Context gating `y = x ⊙ σ(W x + b)`: features re-weight each other.

    With `use_batch_norm=True` the bias is replaced by batch normalisation of
    `W x` (the form in Miech et al.'s YouTube-8M code). The sigmoid is taken
    in float32; the product is returned in the layer's compute dtype.
    Sequences `[B, T, D]` are gated frame by frame; a mask passes through
    unchanged and keeps padded frames out of the batch-norm statistics.

    Args:
        use_batch_norm: bool, batch-normalise the gate logits instead of
            adding a bias.
        kernel_initializer: initializer of W.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor `[B, D]` or `[B, T, D]`.
        mask: optional bool `[B, T]` for sequence inputs.
        training: bool, batch-norm mode.

    Returns:
        Tensor of the input's shape.

    Example:
        >>> gate = ContextGating(use_batch_norm=True)
        >>> y = gate(keras.random.normal((4, 1024)))  # [4, 1024]

    Reference: Miech, Laptev and Sivic, "Learnable pooling with Context
    Gating for video classification", 2017.
    """

    def __init__(self, use_batch_norm=False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.use_batch_norm = bool(use_batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True
        self.gate_dense = None
        self.batch_norm = (
            keras.layers.BatchNormalization(dtype=self.dtype_policy, name="gate_batch_norm")
            if self.use_batch_norm
            else None
        )

    def build(self, input_shape):
        checks.tensor_shape(self, input_shape, "inputs", (2, 3))
        self.gate_dense = keras.layers.Dense(
            input_shape[-1],
            use_bias=not self.use_batch_norm,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="gate_dense",
        )
        self.gate_dense.build(input_shape)
        if self.batch_norm is not None:
            self.batch_norm.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        logits = self.gate_dense(inputs)
        if self.batch_norm is not None:
            bn_mask = mask if (mask is not None and len(inputs.shape) == 3) else None
            logits = self.batch_norm(logits, training=training, mask=bn_mask)
        gates = ops.sigmoid(ops.cast(logits, "float32"))
        return inputs * ops.cast(gates, inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            use_batch_norm=self.use_batch_norm,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
