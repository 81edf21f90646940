"""Cross-modal multi-head attention (Goyal et al. 2020).

`CrossModalMultiHeadAttention` is one layer of attention over video and
audio in which each modality's logits take in the other's; the encoders that
stack it (and the plain self-attention encoder) are in `layers/transformer.py`.
"""
import math

import keras
from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.layers import checks
from vt_keras.layers.cross_modal import MASK_LOGIT, correlation_gate
from vt_keras.layers.logit_transform import SeparableLogitTransform

# The forms of F (see CrossModalMultiHeadAttention): the first two convolve the other modality's
# logit map; "separable" filters its queries and keys along time before their product.
FORMS = ("conv", "dense", "separable")
_MHA_ARGS = ("num_heads", "key_dim", "value_dim", "transform", "transform_kernel_size", "dropout")


def masked_softmax(logits, key_mask):
    """Softmax over keys of float32 `[B, H, Tq, Tk]` logits, padded keys removed.

    Heads lead and keys come last throughout this module, so that the batched
    matmuls and the softmax run without transposes (README, Performance).
    """
    if key_mask is not None:
        key_mask = ops.cast(key_mask, "bool")[:, None, None, :]
        logits = ops.where(key_mask, logits, MASK_LOGIT)
    return ops.softmax(logits, axis=-1)


def logits(query, key):
    """`[B, H, Tq, Tk]` dot products of `[B, T, H, dk]` queries and keys."""
    return ops.einsum("bqhk,bthk->bhqt", query, key)


class AttentionHeads(keras.layers.Layer):
    """The query, key, value and output projections of one modality's heads."""

    def __init__(self, num_heads, key_dim, value_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim

        def projection(dim, name):
            return keras.layers.EinsumDense("btd,dhk->bthk", output_shape=(None, num_heads, dim),
                                            bias_axes="hk", dtype=self.dtype_policy, name=name)

        self.query_dense = projection(key_dim, "query")
        self.key_dense = projection(key_dim, "key")
        self.value_dense = projection(value_dim, "value")

    def build(self, input_shape):
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build(input_shape)
        self.output_dense = keras.layers.EinsumDense(
            "bthk,hkd->btd", output_shape=(None, input_shape[-1]), bias_axes="d",
            dtype=self.dtype_policy, name="attention_output")
        self.output_dense.build((None, None, self.num_heads, self.value_dim))
        self.built = True

    def query_key(self, inputs):
        """Scaled float32 queries and float32 keys, `[B, T, H, dk]` each."""
        query = ops.cast(self.query_dense(inputs), "float32") / math.sqrt(self.key_dim)
        return query, ops.cast(self.key_dense(inputs), "float32")

    def call(self, inputs):
        """Scaled float32 logits `[B, H, Tq, Tk]` and values `[B, T, H, dv]`."""
        query, key = self.query_key(inputs)
        return logits(query, key), self.value_dense(inputs)

    def combine(self, probs, value):
        """Attention-weighted values, projected back to the input size."""
        mixed = ops.einsum("bhqt,bthk->bqhk", ops.cast(probs, value.dtype), value)
        return self.output_dense(mixed)


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossModalMultiHeadAttention(keras.layers.Layer):
    """Multi-head self-attention per modality, each steered by the other's logits.

    Head i of the video stream computes

        softmax_t(L_v,i + g · F_a,i(L_a,i)) · V_v W^V_iv,
        L_m,i = Q_m W^Q_im (K_m W^K_im)^T / sqrt(key_dim),

    and the audio stream symmetrically, where g is the optional correlation
    (CM-G; 1 when not given) and F a learned transform followed by a ReLU,
    applied to the other modality's logits per head:

    - `transform="conv"`: a per-head 2-D convolution of the `[T, T]` logit
      map (zero padding, "same" size). A kernel with a single 1 at offset
      (s, s) from its centre moves the map s frames along both time axes, so F
      can express a lead or lag of up to `transform_kernel_size // 2` frames.
    - `transform="dense"`: a per-head affine map `w_i · L + b_i` (no shift).
    - `transform="separable"`: "conv" with a rank-1 kernel `a b^T` per
      head (a move along both time axes is rank 1, so the lead or lag stays
      expressible), at a fraction of the cost (README, Performance).

    "separable" is computed from the other modality's queries and keys,
    filtered along time before their product
    (`vt_keras.layers.logit_transform`), so no `[T, T]` map is convolved.
    The other modality's logits are zeroed on its padded frames before F, so
    padding never leaks through F; padded keys are removed before every
    softmax (float32). The paper writes the audio term with the video key
    projection; it is audio self-attention, so the audio key projection is
    used. The modalities share the time axis (YouTube-8M frames are
    synchronous). With `g = 0` each stream is plain multi-head self-attention.

    Args:
        num_heads: attention heads per modality.
        key_dim: size of each head's queries and keys.
        value_dim: size of each head's values; None uses `key_dim`.
        transform: "conv", "dense" or "separable", the form of F (see above).
        transform_kernel_size: kernel size k of the "conv" and "separable"
            transforms (a lead or lag of up to k // 2 frames).
        dropout: dropout rate on the attention probabilities.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(video [B, T, Dv], audio [B, T, Da])`.
        mask: optional `(video_mask, audio_mask)`, each `[B, T]` bool or None.
        correlation: optional `[B]` or `[B, 1]` gate on the cross-modal terms.
        return_attention_scores: if True, also return the float32
            probabilities `(video [B, H, T, T], audio [B, H, T, T])`.
        training: enables dropout.

    Returns:
        `(video_out [B, T, Dv], audio_out [B, T, Da])`; the input masks are
        carried over.

    Example:
    >>> mha = CrossModalMultiHeadAttention(num_heads=2, key_dim=8)
    >>> video, audio = np.zeros((2, 10, 16), "f"), np.zeros((2, 10, 4), "f")
    >>> [tuple(t.shape) for t in mha((video, audio))]
    [(2, 10, 16), (2, 10, 4)]

    Reference: Goyal et al., "Cross-modal Learning for Multi-modal Video
    Categorization", 2020; Vaswani et al., "Attention Is All You Need", 2017.
    """

    def __init__(self, num_heads=4, key_dim=64, value_dim=None, transform="conv",
                 transform_kernel_size=3, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_heads", num_heads), ("key_dim", key_dim),
                            ("transform_kernel_size", transform_kernel_size)):
            checks.positive_int(name, value)
        checks.positive_int("value_dim", value_dim, allow_none=True)
        if transform not in FORMS:
            raise ConfigError(f"transform must be one of {FORMS}; got {transform!r}")
        checks.dropout_rate(dropout)
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.transform, self.transform_kernel_size = transform, transform_kernel_size
        self.dropout = dropout
        self.supports_masking = True

        heads = (num_heads, key_dim, value_dim or key_dim)
        self.video_heads = AttentionHeads(*heads, dtype=self.dtype_policy, name="video_heads")
        self.audio_heads = AttentionHeads(*heads, dtype=self.dtype_policy, name="audio_heads")
        size = 1 if transform == "dense" else transform_kernel_size
        self.audio_to_video, self.video_to_audio = (
            # float32 like the logits it adds to, under any precision policy.
            SeparableLogitTransform(num_heads, size, dtype="float32", name=name)
            if transform == "separable" else
            keras.layers.DepthwiseConv2D(size, padding="same", dtype=self.dtype_policy, name=name)
            for name in ("audio_to_video", "video_to_audio"))
        self.probs_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        video_shape, audio_shape = checks.pair_of_shapes(self, input_shape)
        checks.frames_shape(self, video_shape, "video")
        checks.frames_shape(self, audio_shape, "audio")
        checks.same_time_axis(self, video_shape, audio_shape)
        self.video_heads.build(video_shape)
        self.audio_heads.build(audio_shape)
        for transform in (self.audio_to_video, self.video_to_audio):
            if self.transform == "separable":
                transform.build()
            else:
                transform.build((None, None, None, self.num_heads))
        self.built = True

    def _cross_term(self, transform, query, key, logits, mask):
        """ReLU(F(L_other)), float32 `[B, H, Tq, Tk]`, from the other modality's queries, keys, logits."""
        if self.transform == "separable":
            if mask is not None:
                # Zero rows of Q and K are the logit map zeroed at every pair with a padded frame.
                valid = ops.cast(mask, "float32")[:, :, None, None]
                query, key = query * valid, key * valid
            return transform(query, key)
        if mask is not None:
            valid = ops.cast(mask, "bool")
            pairs = ops.logical_and(valid[:, None, :, None], valid[:, None, None, :])
            logits = ops.where(pairs, logits, 0.0)
        # The depthwise convolution wants the heads as channels, last.
        mapped = transform(ops.transpose(logits, (0, 2, 3, 1)))
        return ops.relu(ops.cast(ops.transpose(mapped, (0, 3, 1, 2)), "float32"))

    def call(self, inputs, mask=None, correlation=None, return_attention_scores=False,
             training=None):
        video, audio = checks.pair(self, inputs, "inputs")
        video_mask, audio_mask = checks.pair(self, mask, "mask")
        query_v, key_v = self.video_heads.query_key(video)
        query_a, key_a = self.audio_heads.query_key(audio)
        logits_v, logits_a = logits(query_v, key_v), logits(query_a, key_a)
        value_v, value_a = self.video_heads.value_dense(video), self.audio_heads.value_dense(audio)
        cross_v = self._cross_term(self.audio_to_video, query_a, key_a, logits_a, audio_mask)
        cross_a = self._cross_term(self.video_to_audio, query_v, key_v, logits_v, video_mask)
        if correlation is not None:
            gate = correlation_gate(correlation, 4)
            cross_v, cross_a = cross_v * gate, cross_a * gate
        probs_v = masked_softmax(logits_v + cross_v, video_mask)
        probs_a = masked_softmax(logits_a + cross_a, audio_mask)
        out_v = self.video_heads.combine(self.probs_dropout(probs_v, training=training), value_v)
        out_a = self.audio_heads.combine(self.probs_dropout(probs_a, training=training), value_a)
        if return_attention_scores:
            return out_v, out_a, (probs_v, probs_a)
        return out_v, out_a

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _MHA_ARGS})
        return config
