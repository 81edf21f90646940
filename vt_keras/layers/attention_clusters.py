"""Attention clusters, for one modality and cross-modal.

`AttentionClusters` is the purely attention-based frame aggregator of Long et
al. (2018): K attention units, each a softmax over time of a linear score of the
frames (or of recurrent hidden states), whose weighted sums are concatenated.
`CrossModalAttentionClusters` is the cross-modal attention RNN of Goyal et al.
(2020) in that multi-modal cluster form: each modality's attention weights are
increased by a learned ReLU transform, along time, of the other modality's.

These are the layers of the configs' `rnn` aggregator. Despite the name, no
recurrent layer runs by default (`encoder=None`): Goyal et al.'s "attention
RNN" experiments use the attention-cluster form of Long et al. (their §2),
which attends over the frames themselves; `encoder="gru"` or `"lstm"` adds
the recurrent encoder.
"""
import keras
from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.layers import checks
from vt_keras.layers.cross_modal import MASK_LOGIT, TRANSFORMS, correlation_gate

_ENCODERS = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}


def _masked_time_softmax(scores, mask):
    """Softmax over the last (time) axis in float32, padded frames exactly 0."""
    scores = ops.cast(scores, "float32")
    if mask is None:
        return ops.softmax(scores, axis=-1)
    mask = ops.cast(mask, "bool")[:, None, :]
    weights = ops.softmax(ops.where(mask, scores, MASK_LOGIT), axis=-1)
    # An all-padded row would otherwise be uniform over padding.
    return weights * ops.cast(mask, "float32")


@keras.saving.register_keras_serializable(package="vt_keras")
class AttentionClusters(keras.layers.Layer):
    """K attention units over time, their weighted sums concatenated.

    Unit k scores every frame with a linear map, `s_k,t = w_k · h_t`, takes a
    softmax over time, `a_k,t = softmax_t(s_k,t)`, with padded frames removed
    before the softmax, and returns `v_k = Σ_t a_k,t h_t`. The frames are used
    as they are (`encoder=None`) or first run through a GRU or LSTM that
    returns its hidden states. The shifting operation of Long et al. (a
    learned scale and bias, then L2 normalisation of each `v_k`) is not used,
    following Goyal et al. This is the `rnn` aggregator of the configs: with
    the default `encoder=None` it runs no recurrent layer, as in the paper's
    attention-cluster experiments.

    Args:
        num_clusters: K, the number of attention units.
        encoder: None, "gru" or "lstm": the recurrent encoder run before the
            attention (the padding mask is passed to it).
        encoder_units: hidden size of the encoder; None keeps the input size.
            Ignored when `encoder` is None.
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Call arguments:
        inputs: `[B, T, D]` frame features.
        mask: optional `[B, T]` bool, False on padded frames.
        return_attention: if True, also return the attention weights.
        training: passed to the encoder.

    Returns:
        `[B, K·H]` with H = `encoder_units` (D without an encoder), and with
        `return_attention=True` also the float32 weights `[B, K, T]`.

    Example:
    >>> layer = AttentionClusters(num_clusters=4)
    >>> layer(np.zeros((2, 10, 8), "float32")).shape
    TensorShape([2, 32])

    Reference: Long et al., "Attention Clusters: Purely Attention Based Local
    Feature Integration for Video Classification", CVPR 2018.
    """

    def __init__(self, num_clusters=8, encoder=None, encoder_units=None, **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("num_clusters", num_clusters)
        if encoder is not None and encoder not in _ENCODERS:
            raise ConfigError(
                f"encoder must be None, 'gru' or 'lstm'; got {encoder!r}"
            )
        checks.positive_int("encoder_units", encoder_units, allow_none=True)
        self.num_clusters = num_clusters
        self.encoder = encoder
        self.encoder_units = encoder_units
        self.supports_masking = True

    def build(self, input_shape):
        features = checks.frames_shape(self, input_shape)[-1]
        # Without an encoder the frames are the hidden states: encoder_units is unused.
        self.hidden_dim = (self.encoder_units or features) if self.encoder else features
        self.sequence_encoder = None
        if self.encoder is not None:
            self.sequence_encoder = _ENCODERS[self.encoder](
                self.hidden_dim,
                return_sequences=True,
                dtype=self.dtype_policy,
                name=f"{self.encoder}_encoder",
            )
            self.sequence_encoder.build(input_shape)
        # A per-unit bias is constant over time and cancels in the softmax.
        self.score_dense = keras.layers.Dense(
            self.num_clusters,
            use_bias=False,
            dtype=self.dtype_policy,
            name="scores",
        )
        self.score_dense.build((None, None, self.hidden_dim))
        self.built = True

    def attend(self, inputs, mask=None, training=None):
        """Returns the hidden states `[B, T, H]` and float32 weights `[B, K, T]`."""
        hidden = inputs
        if self.sequence_encoder is not None:
            hidden = self.sequence_encoder(inputs, mask=mask, training=training)
        scores = ops.transpose(self.score_dense(hidden), (0, 2, 1))
        return hidden, _masked_time_softmax(scores, mask)

    def aggregate(self, hidden, weights):
        """`Σ_t w_k,t h_t` for every unit, flattened to `[B, K·H]`.

        The sum runs in float32; `weights` must already be 0 on padded frames.
        """
        pooled = ops.einsum(
            "bkt,bth->bkh", ops.cast(weights, "float32"), ops.cast(hidden, "float32")
        )
        pooled = ops.reshape(pooled, (-1, self.num_clusters * self.hidden_dim))
        return ops.cast(pooled, self.compute_dtype)

    def call(self, inputs, mask=None, return_attention=False, training=None):
        hidden, weights = self.attend(inputs, mask=mask, training=training)
        outputs = self.aggregate(hidden, weights)
        if return_attention:
            return outputs, weights
        return outputs

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_clusters": self.num_clusters,
                "encoder": self.encoder,
                "encoder_units": self.encoder_units,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossModalAttentionClusters(keras.layers.Layer):
    """Attention clusters per modality, each steered by the other's attention.

    For video with attention `α_v` (`[B, Kv, T]`) and hidden states `h_v`, and
    audio likewise, the layer returns the concatenation of

        c_v,k = Σ_t (α_v + g · F_a(α_a))_k,t h_v,t
        c_a,k = Σ_t (α_a + g · F_v(α_v))_k,t h_a,t

    for every unit k, where F is a learned transform followed by a ReLU and g
    the optional correlation (CM-G gating; 1 when not given). F acts along
    time, so that it can learn that one modality leads or lags the other:

    - `transform="conv"`: a 1-D convolution over time (`padding="same"`) from
      the other modality's K maps to this modality's K maps. Any sequence
      length works; a kernel of size `transform_kernel_size` can express a
      shift of up to `transform_kernel_size // 2` frames.
    - `transform="dense"`: a per-frame affine map of the other modality's
      cluster axis only (no temporal context).

    F's output is zeroed on this modality's padded frames. As in the paper the
    weights `α + g · F(α_other)` are not renormalised: their sum over time is
    1 + the mass of F's output. With `g = 0` the layer is two independent
    `AttentionClusters`. The paper's model uses the multi-modal cluster form of
    Long et al. without its shifting operation, which is what this layer does.
    Video and audio must share the time axis (the same T). This is the
    cross-modal `rnn` aggregator of the configs (`rnn_cm_*`); by default it
    runs no recurrent layer (`encoder=None`), as in the paper.

    Args:
        video_clusters: Kv, attention units for video.
        audio_clusters: Ka, attention units for audio.
        encoder: None, "gru" or "lstm", run per modality before the attention.
        encoder_units: the encoders' hidden size; None keeps each input size.
            Ignored when `encoder` is None.
        transform: "conv" or "dense", the form of F (see above).
        transform_kernel_size: temporal kernel size of the "conv" transform.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(video [B, T, Dv], audio [B, T, Da])`.
        mask: optional `(video_mask, audio_mask)`, each `[B, T]` bool or None.
        correlation: optional `[B]` or `[B, 1]` gate on the cross-modal terms.
        return_attention: if True, also return the weights actually summed,
            `(video [B, Kv, T], audio [B, Ka, T])`, float32.
        training: passed to the encoders.

    Returns:
        `[B, Kv·Hv + Ka·Ha]` (H = `encoder_units`, or the input size without
        an encoder).

    Example:
    >>> layer = CrossModalAttentionClusters(video_clusters=4, audio_clusters=2)
    >>> video, audio = np.zeros((2, 10, 16), "f"), np.zeros((2, 10, 8), "f")
    >>> layer((video, audio)).shape
    TensorShape([2, 80])

    Reference: Goyal et al., "Cross-modal Learning for Multi-modal Video
    Categorization", 2020 (attention RNN); Long et al., CVPR 2018.
    """

    def __init__(
        self,
        video_clusters=8,
        audio_clusters=8,
        encoder=None,
        encoder_units=None,
        transform="conv",
        transform_kernel_size=5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if transform not in TRANSFORMS:
            raise ConfigError(f"transform must be 'conv' or 'dense'; got {transform!r}")
        checks.positive_int("video_clusters", video_clusters)
        checks.positive_int("audio_clusters", audio_clusters)
        checks.positive_int("transform_kernel_size", transform_kernel_size)
        self.video_clusters = video_clusters
        self.audio_clusters = audio_clusters
        self.encoder = encoder
        self.encoder_units = encoder_units
        self.transform = transform
        self.transform_kernel_size = transform_kernel_size
        self.supports_masking = True

        def clusters(num, name):
            return AttentionClusters(
                num, encoder, encoder_units, dtype=self.dtype_policy, name=name
            )

        def transform_layer(filters, name):
            if transform == "dense":
                return keras.layers.Dense(filters, dtype=self.dtype_policy, name=name)
            return keras.layers.Conv1D(
                filters,
                transform_kernel_size,
                padding="same",
                dtype=self.dtype_policy,
                name=name,
            )

        self.video_attention = clusters(video_clusters, "video_clusters")
        self.audio_attention = clusters(audio_clusters, "audio_clusters")
        # F_a maps audio attention onto video units, F_v the reverse.
        self.audio_to_video = transform_layer(video_clusters, "audio_to_video")
        self.video_to_audio = transform_layer(audio_clusters, "video_to_audio")

    def build(self, input_shape):
        video_shape, audio_shape = checks.pair_of_shapes(self, input_shape)
        checks.frames_shape(self, video_shape, "video")
        checks.frames_shape(self, audio_shape, "audio")
        checks.same_time_axis(self, video_shape, audio_shape)
        self.video_attention.build(video_shape)
        self.audio_attention.build(audio_shape)
        self.audio_to_video.build((None, None, self.audio_clusters))
        self.video_to_audio.build((None, None, self.video_clusters))
        self.built = True

    def _cross_term(self, transform, other_weights, mask):
        """ReLU(F(α_other)) as `[B, K_self, T]` float32, 0 on padded frames."""
        cross = transform(ops.transpose(other_weights, (0, 2, 1)))
        cross = ops.transpose(ops.relu(ops.cast(cross, "float32")), (0, 2, 1))
        if mask is not None:
            cross = cross * ops.cast(mask, "float32")[:, None, :]
        return cross

    def call(
        self, inputs, mask=None, correlation=None, return_attention=False, training=None
    ):
        video, audio = checks.pair(self, inputs, "inputs")
        video_mask, audio_mask = checks.pair(self, mask, "mask")
        h_v, alpha_v = self.video_attention.attend(video, video_mask, training)
        h_a, alpha_a = self.audio_attention.attend(audio, audio_mask, training)
        cross_v = self._cross_term(self.audio_to_video, alpha_a, video_mask)
        cross_a = self._cross_term(self.video_to_audio, alpha_v, audio_mask)
        if correlation is not None:
            gate = correlation_gate(correlation, 3)
            cross_v, cross_a = cross_v * gate, cross_a * gate
        weights_v, weights_a = alpha_v + cross_v, alpha_a + cross_a
        outputs = ops.concatenate(
            [
                self.video_attention.aggregate(h_v, weights_v),
                self.audio_attention.aggregate(h_a, weights_a),
            ],
            axis=-1,
        )
        if return_attention:
            return outputs, (weights_v, weights_a)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "video_clusters": self.video_clusters,
                "audio_clusters": self.audio_clusters,
                "encoder": self.encoder,
                "encoder_units": self.encoder_units,
                "transform": self.transform,
                "transform_kernel_size": self.transform_kernel_size,
            }
        )
        return config
