"""NetVLAD frame aggregation and its cross-modal variant (Goyal et al.)."""
import math

import keras
from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.layers import checks
from vt_keras.ops import l2_normalize


@keras.saving.register_keras_serializable(package="vt_keras")
class NetVLAD(keras.layers.Layer):
    """Aggregates frame features into residuals to learned cluster centres.

    For frames x_t and K clusters:

        a_k(x_t) = softmax_k(w_k·x_t + b_k)
        V_k      = Σ_t a_k(x_t) (x_t − c_k)

    then each V_k is L2-normalised (intra-normalisation), the K·D vector is
    flattened and L2-normalised again. With `use_batch_norm=True` (the form
    of the YouTube-8M winners, Miech et al. 2017) the bias b_k is replaced by
    batch normalisation of the assignment logits. The centres c_k are their
    own weights, separate from the assignment weights w_k. Padded frames get
    assignment 0, so they add nothing to V_k and do not count in batch-norm
    statistics. Softmax, sums and norms run in float32; every L2 norm is
    `x / sqrt(max(Σx², ε))` (`vt_keras.ops.l2_normalize`, the convention of
    `tf.math.l2_normalize` and of the YouTube-8M winners' code), so an empty
    cluster gives exactly 0 with a finite gradient, never NaN.

    Args:
        num_clusters: int K.
        output_dim: optional int; project the K·D vector to this size with a
            dense layer (with bias). None returns the normalised K·D vector.
        use_batch_norm: bool, batch norm instead of a bias on the assignment
            logits.
        epsilon: float ε, the floor of the squared norm in every L2
            normalisation.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor `[B, T, D]`.
        mask: optional bool `[B, T]`, True for real frames.
        training: bool, batch-norm mode.
        return_assignments: if True, also return the soft assignments.

    Returns:
        `[B, K·D]` (or `[B, output_dim]`) in the layer's compute dtype, laid
        out cluster-major (`[B, K, D]` flattened); with
        `return_assignments=True` also the float32 assignments `[B, K, T]`
        (0 at padded frames), clusters by time like the attention weights of
        `AttentionClusters`.

    Example:
        >>> vlad = NetVLAD(num_clusters=64)
        >>> frames = keras.random.normal((2, 300, 128))
        >>> vlad(frames, mask=keras.ops.ones((2, 300), "bool")).shape
        (2, 8192)

    Reference: Arandjelović et al., "NetVLAD: CNN architecture for weakly
    supervised place recognition", CVPR 2016; Miech, Laptev and Sivic,
    "Learnable pooling with Context Gating for video classification", 2017.
    """

    def __init__(self, num_clusters=64, output_dim=None, use_batch_norm=True,
                 epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if int(num_clusters) < 1:
            raise ConfigError(f"NetVLAD num_clusters must be >= 1, got {num_clusters}")
        if output_dim is not None and int(output_dim) < 1:
            raise ConfigError(f"NetVLAD output_dim must be None or >= 1, got {output_dim}")
        if float(epsilon) <= 0:
            raise ConfigError(f"NetVLAD epsilon must be > 0, got {epsilon}")
        self.num_clusters = int(num_clusters)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.use_batch_norm = bool(use_batch_norm)
        self.epsilon = float(epsilon)
        self.supports_masking = True
        self.assignment_dense = None
        self.assignment_batch_norm = (
            keras.layers.BatchNormalization(
                dtype=self.dtype_policy, name="assignment_batch_norm"
            )
            if self.use_batch_norm
            else None
        )
        self.projection = (
            keras.layers.Dense(self.output_dim, dtype=self.dtype_policy, name="projection")
            if self.output_dim is not None
            else None
        )

    def build(self, input_shape):
        dim = int(checks.frames_shape(self, input_shape)[-1])
        self.feature_dim = dim
        init = keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(dim))
        self.assignment_dense = keras.layers.Dense(
            self.num_clusters,
            use_bias=not self.use_batch_norm,
            kernel_initializer=init,
            dtype=self.dtype_policy,
            name="assignment_dense",
        )
        self.assignment_dense.build(input_shape)
        if self.assignment_batch_norm is not None:
            self.assignment_batch_norm.build(tuple(input_shape[:-1]) + (self.num_clusters,))
        self.centers = self.add_weight(
            shape=(self.num_clusters, dim), initializer=init, name="centers"
        )
        if self.projection is not None:
            self.projection.build((input_shape[0], self.num_clusters * dim))

    def soft_assign(self, inputs, mask=None, training=None):
        """float32 assignments `[B, T, K]`: softmax over clusters, 0 at padded frames."""
        logits = self.assignment_dense(inputs)
        if self.assignment_batch_norm is not None:
            bn_mask = None if mask is None else ops.cast(mask, "bool")
            logits = self.assignment_batch_norm(logits, training=training, mask=bn_mask)
        weights = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        if mask is not None:
            weights = weights * ops.cast(mask, "float32")[..., None]
        return weights

    def aggregate(self, weights, inputs):
        """Normalised VLAD `[B, K·D]` (float32) from weights `[B, T, K]` and frames.

        Weights need not sum to 1 over clusters (the cross-modal form adds a
        transformed term); zero weights at padded frames keep them out.
        """
        x = ops.cast(inputs, "float32")
        weights = ops.cast(weights, "float32")
        # Σ_t a_tk (x_t − c_k) = Σ_t a_tk x_t − (Σ_t a_tk) c_k
        weighted_sum = ops.einsum("btk,btd->bkd", weights, x)
        mass = ops.sum(weights, axis=1)[..., None]
        residuals = weighted_sum - mass * ops.cast(self.centers, "float32")[None]
        residuals = l2_normalize(residuals, axis=-1, epsilon=self.epsilon)
        flat = ops.reshape(residuals, (-1, self.num_clusters * self.feature_dim))
        return l2_normalize(flat, axis=-1, epsilon=self.epsilon)

    def project(self, vlad):
        """Casts to the compute dtype and applies the optional projection."""
        vlad = ops.cast(vlad, self.compute_dtype)
        return vlad if self.projection is None else self.projection(vlad)

    def call(self, inputs, mask=None, training=None, return_assignments=False):
        weights = self.soft_assign(inputs, mask=mask, training=training)
        outputs = self.project(self.aggregate(weights, inputs))
        if return_assignments:
            return outputs, ops.transpose(weights, (0, 2, 1))
        return outputs

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        dim = self.output_dim
        if dim is None:
            dim = self.num_clusters * input_shape[-1]
        return (input_shape[0], dim)

    def compute_output_spec(self, inputs, mask=None, training=None, return_assignments=False):
        outputs = keras.KerasTensor(self.compute_output_shape(inputs.shape), self.compute_dtype)
        if not return_assignments:
            return outputs
        batch, steps = inputs.shape[:2]
        return outputs, keras.KerasTensor((batch, self.num_clusters, steps), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_clusters=self.num_clusters,
            output_dim=self.output_dim,
            use_batch_norm=self.use_batch_norm,
            epsilon=self.epsilon,
        )
        return config


def _unit_tuple(units):
    if units is None:
        return ()
    if isinstance(units, int):
        return (units,)
    return tuple(int(u) for u in units)


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossModalNetVLAD(keras.layers.Layer):
    """Video and audio NetVLADs whose assignments influence each other.

    Goyal et al.'s cross-modal NetVLAD, per frame t (the modalities share the
    time axis):

        w_v,t = α_v,t + g · F_a(α_a,t)      V_v = Σ_t w_v,t (x_v,t − c_v)
        w_a,t = α_a,t + g · F_v(α_v,t)      V_a = Σ_t w_a,t (x_a,t − c_a)

    α are the NetVLAD soft assignments after the softmax (F acts on
    attention weights, as the paper says). F_a maps the audio assignment
    (audio_clusters values) to video_clusters values and F_v the reverse;
    each is a ReLU dense transform, optionally after hidden ReLU layers of
    `transform_units`. With `transform_kernel_size` k > 1 every layer of F
    is instead a ReLU convolution over time of width k ("same" padding, the
    other modality's padded frames set to 0 before each layer), so
    `F_a(α_a)_t` reads the audio assignments of frames t − ⌊k/2⌋ … t + ⌊(k−1)/2⌋
    (one layer) and can follow an audio event a few frames away from the
    visual one, as the temporal F of the other two cross-modal aggregators
    does; k = 1 is the paper's per-frame form. Following the paper's equation, w = α + g·F(·) is
    *not* renormalised: F's output is non-negative, so w only adds mass to
    clusters. The cross term is zero at frames where either modality is
    padded. g is `correlation`, the frozen correlation tower's probability
    (the CM-G variant); None means g = 1, and g = 0 gives exactly two
    independent NetVLADs. For the CM-C variant, concatenate the tower's
    embedding to each modality's frames before this layer instead.

    Each modality's VLAD is intra-normalised, flattened and L2-normalised as
    in `NetVLAD`; the two are concatenated (video first) and optionally
    projected to `output_dim`.

    Args:
        video_clusters: int Kv (128 in the paper).
        audio_clusters: int Ka (64 in the paper).
        transform_units: None, an int or a sequence of ints: widths of hidden
            ReLU layers of F before its final ReLU layer. None: F is one ReLU
            dense layer.
        transform_kernel_size: int k, the temporal width of each layer of F
            (1: per frame, dense layers; k > 1: convolutions over time).
        output_dim: optional int size of a final dense projection.
        use_batch_norm: bool, batch norm instead of a bias on each modality's
            assignment logits.
        epsilon: float ε, the floor of the squared norm in every L2
            normalisation (see `NetVLAD`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: tuple `(video [B, T, Dv], audio [B, T, Da])`.
        mask: optional tuple `(video_mask [B, T], audio_mask [B, T])`.
        correlation: optional float `[B]` or `[B, 1]` in [0, 1].
        training: bool, batch-norm mode.
        return_assignments: if True, also return the weights each modality's
            frames are summed with, `α + g·F(α_other)`, float32
            `(video [B, Kv, T], audio [B, Ka, T])`.

    Returns:
        `[B, Kv·Dv + Ka·Da]` (or `[B, output_dim]`) in the compute dtype (and
        the weights with `return_assignments=True`).

    Example:
        >>> layer = CrossModalNetVLAD(video_clusters=128, audio_clusters=64)
        >>> video = keras.random.normal((2, 300, 1024))
        >>> audio = keras.random.normal((2, 300, 128))
        >>> p = keras.ops.array([0.9, 0.1])
        >>> layer((video, audio), correlation=p).shape
        (2, 139264)

    Reference: Goyal et al., "Cross-modal learning for multi-modal video
    categorization" (cross-modal NetVLAD, correlation tower, CM-G).
    """

    def __init__(self, video_clusters=128, audio_clusters=64, transform_units=None,
                 output_dim=None, use_batch_norm=True, epsilon=1e-12, transform_kernel_size=1,
                 **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("transform_kernel_size", transform_kernel_size)
        if output_dim is not None and int(output_dim) < 1:
            raise ConfigError(
                f"CrossModalNetVLAD output_dim must be None or >= 1, got {output_dim}"
            )
        hidden = _unit_tuple(transform_units)
        if any(u < 1 for u in hidden):
            raise ConfigError(
                f"CrossModalNetVLAD transform_units must be positive, got {transform_units}"
            )
        self.video_clusters = int(video_clusters)
        self.audio_clusters = int(audio_clusters)
        self.transform_units = transform_units
        self.output_dim = None if output_dim is None else int(output_dim)
        self.use_batch_norm = bool(use_batch_norm)
        self.epsilon = float(epsilon)
        self.transform_kernel_size = transform_kernel_size
        self.supports_masking = True
        common = dict(use_batch_norm=use_batch_norm, epsilon=epsilon, dtype=self.dtype_policy)
        self.video_netvlad = NetVLAD(self.video_clusters, name="video_netvlad", **common)
        self.audio_netvlad = NetVLAD(self.audio_clusters, name="audio_netvlad", **common)

        def transform(out_units, name):
            if transform_kernel_size == 1:
                return [keras.layers.Dense(u, activation="relu", dtype=self.dtype_policy, name=f"{name}_{i}")
                        for i, u in enumerate(hidden + (out_units,))]
            return [keras.layers.Conv1D(u, transform_kernel_size, padding="same", activation="relu",
                                        dtype=self.dtype_policy, name=f"{name}_{i}")
                    for i, u in enumerate(hidden + (out_units,))]

        # F_a: audio assignment -> video clusters; F_v: video -> audio.
        self.audio_to_video = transform(self.video_clusters, "audio_to_video")
        self.video_to_audio = transform(self.audio_clusters, "video_to_audio")
        self.projection = (
            keras.layers.Dense(self.output_dim, dtype=self.dtype_policy, name="projection")
            if self.output_dim is not None
            else None
        )

    def build(self, input_shape):
        video_shape, audio_shape = checks.pair_of_shapes(self, input_shape)
        checks.frames_shape(self, video_shape, "video")
        checks.frames_shape(self, audio_shape, "audio")
        checks.same_time_axis(self, video_shape, audio_shape)
        self.video_netvlad.build(video_shape)
        self.audio_netvlad.build(audio_shape)
        for layers, in_dim in ((self.audio_to_video, self.audio_clusters),
                               (self.video_to_audio, self.video_clusters)):
            for layer in layers:
                layer.build((None, None, in_dim))
                in_dim = layer.units if isinstance(layer, keras.layers.Dense) else layer.filters
        if self.projection is not None:
            width = (self.video_clusters * video_shape[-1]
                     + self.audio_clusters * audio_shape[-1])
            self.projection.build((video_shape[0], width))

    @staticmethod
    def _apply(layers, x, mask):
        """F of assignments `x` `[B, T, K]` (0 at padded frames); `mask`: their modality's frames or None."""
        for i, layer in enumerate(layers):
            if i and mask is not None:
                # A hidden layer's relu(bias) at a padded frame must not reach a valid one through a
                # temporal kernel (a no-op for the per-frame form, whose padded outputs are gated below).
                x = x * ops.cast(mask, x.dtype)[..., None]
            x = layer(x)
        return ops.cast(x, "float32")

    def call(self, inputs, mask=None, correlation=None, training=None, return_assignments=False):
        video, audio = checks.pair(self, inputs, "inputs")
        video_mask, audio_mask = checks.pair(self, mask, "mask")
        alpha_v = self.video_netvlad.soft_assign(video, video_mask, training=training)
        alpha_a = self.audio_netvlad.soft_assign(audio, audio_mask, training=training)
        # F(0) = relu(bias) need not be 0: gate the cross term by frame validity.
        both = ops.ones_like(alpha_v[..., :1])
        for m in (video_mask, audio_mask):
            if m is not None:
                both = both * ops.cast(m, "float32")[..., None]
        if correlation is not None:
            gate = ops.reshape(ops.cast(correlation, "float32"), (-1, 1, 1))
            both = both * gate
        weights_v = alpha_v + both * self._apply(self.audio_to_video, alpha_a, audio_mask)
        weights_a = alpha_a + both * self._apply(self.video_to_audio, alpha_v, video_mask)
        pooled = ops.concatenate(
            [self.video_netvlad.aggregate(weights_v, video),
             self.audio_netvlad.aggregate(weights_a, audio)],
            axis=-1,
        )
        pooled = ops.cast(pooled, self.compute_dtype)
        outputs = pooled if self.projection is None else self.projection(pooled)
        if return_assignments:
            return outputs, (ops.transpose(weights_v, (0, 2, 1)), ops.transpose(weights_a, (0, 2, 1)))
        return outputs

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        video_shape, audio_shape = input_shape
        dim = self.output_dim
        if dim is None:
            dim = self.video_clusters * video_shape[-1] + self.audio_clusters * audio_shape[-1]
        return (video_shape[0], dim)

    def compute_output_spec(self, inputs, mask=None, correlation=None, training=None,
                            return_assignments=False):
        video, audio = checks.pair(self, inputs, "inputs")
        outputs = keras.KerasTensor(self.compute_output_shape((video.shape, audio.shape)),
                                    self.compute_dtype)
        if not return_assignments:
            return outputs
        batch, steps = video.shape[:2]
        return outputs, (keras.KerasTensor((batch, self.video_clusters, steps), "float32"),
                         keras.KerasTensor((batch, self.audio_clusters, steps), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            video_clusters=self.video_clusters,
            audio_clusters=self.audio_clusters,
            transform_units=self.transform_units,
            output_dim=self.output_dim,
            use_batch_norm=self.use_batch_norm,
            epsilon=self.epsilon,
            transform_kernel_size=self.transform_kernel_size,
        )
        return config
