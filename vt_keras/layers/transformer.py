"""Post-norm Transformer encoders, pooled over time (Vaswani et al.; Goyal et al. 2020).

`TransformerEncoder` is the one-stream encoder of the early- and late-fusion
baselines; `CrossModalTransformerEncoder` stacks `CrossModalMultiHeadAttention`
over video and audio and pools each modality.
"""
import keras
from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.layers import checks
from vt_keras.layers.cross_modal_attention import (
    AttentionHeads,
    CrossModalMultiHeadAttention,
    masked_softmax,
)
from vt_keras.layers.pooling import FramePooling

_POOLINGS = ("mean", "max", "mean_max")
_ENCODER_ARGS = ("num_layers", "num_heads", "key_dim", "intermediate_dim", "dropout", "pooling")


class _PostNormBlock(keras.layers.Layer):
    """The rest of one post-norm Transformer layer on one stream (Vaswani et al.).

    `x = LN(inputs + dropout(attention_output))`, then `LN(x + dropout(W2 ReLU(W1 x)))`.
    """

    def __init__(self, intermediate_dim, dropout, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim, self.dropout = intermediate_dim, dropout
        self.attention_norm, self.output_norm = (
            keras.layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy, name=name)
            for name in ("attention_norm", "output_norm"))
        self.intermediate_dense = keras.layers.Dense(
            intermediate_dim, activation="relu", dtype=self.dtype_policy, name="intermediate")
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.output_dense = keras.layers.Dense(
            input_shape[-1], dtype=self.dtype_policy, name="output")
        self.attention_norm.build(input_shape)
        self.intermediate_dense.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.output_norm.build(input_shape)
        self.built = True

    def call(self, inputs, attention_output, training=None):
        x = self.attention_norm(inputs + self.dropout_layer(attention_output, training=training))
        y = self.output_dense(self.intermediate_dense(x))
        return self.output_norm(x + self.dropout_layer(y, training=training))


class _EncoderBase(keras.layers.Layer):
    """Argument checks, sublayer factories and config shared by the two encoders."""

    def __init__(self, num_layers, num_heads, key_dim, intermediate_dim, dropout, pooling,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_layers", num_layers), ("num_heads", num_heads),
                            ("key_dim", key_dim), ("intermediate_dim", intermediate_dim)):
            checks.positive_int(name, value)
        checks.dropout_rate(dropout)
        if pooling not in _POOLINGS:
            raise ConfigError(f"pooling must be one of {_POOLINGS}; got {pooling!r}")
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.pooling = pooling
        self.supports_masking = True
        self.pool = FramePooling(pooling, dtype=self.dtype_policy, name="pool")

    def _blocks(self, prefix):
        return [_PostNormBlock(self.intermediate_dim, self.dropout, dtype=self.dtype_policy,
                               name=f"{prefix}block_{i}") for i in range(self.num_layers)]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _ENCODER_ARGS})
        return config


@keras.saving.register_keras_serializable(package="vt_keras")
class TransformerEncoder(_EncoderBase):
    """Post-norm Transformer encoder over one frame stream, pooled over time.

    `num_layers` layers of multi-head self-attention (float32 softmax, padded
    frames removed as keys) and a ReLU feed-forward net, each with a residual
    and layer norm, then masked pooling over the valid frames: the encoder of
    the early- and late-fusion baselines.

    Args:
        num_layers: Transformer layers.
        num_heads: attention heads.
        key_dim: size of each head's queries, keys and values.
        intermediate_dim: hidden size of the feed-forward nets.
        dropout: dropout on attention probabilities and residual branches.
        pooling: "mean", "max" or "mean_max", the masked pooling over time.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[B, T, D]` frames.
        mask: optional `[B, T]` bool, False on padded frames.
        training: enables dropout.
        return_attention_scores: if True, also return each layer's float32
            attention probabilities `[B, H, T, T]` (queries by keys, before
            dropout), a tuple of `num_layers`.

    Returns:
        `[B, D]` (`[B, 2D]` for "mean_max"), and the scores if asked for.

    Example:
    >>> encoder = TransformerEncoder(num_layers=1, num_heads=2, key_dim=8)
    >>> encoder(np.zeros((2, 10, 16), "f")).shape
    TensorShape([2, 16])

    Reference: Vaswani et al., "Attention Is All You Need", NeurIPS 2017, the
    Transformer baseline of Goyal et al. 2020.
    """

    def __init__(self, num_layers=2, num_heads=4, key_dim=64, intermediate_dim=512, dropout=0.1,
                 pooling="mean", **kwargs):
        super().__init__(num_layers, num_heads, key_dim, intermediate_dim, dropout, pooling,
                         **kwargs)
        self.heads = [AttentionHeads(num_heads, key_dim, key_dim, dtype=self.dtype_policy,
                             name=f"heads_{i}") for i in range(num_layers)]
        self.blocks = self._blocks("")
        self.probs_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        checks.frames_shape(self, input_shape)
        for layer in self.heads + self.blocks:
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        x, scores = inputs, []
        for heads, block in zip(self.heads, self.blocks):
            logits, value = heads(x)
            probs = masked_softmax(logits, mask)
            scores.append(probs)
            x = block(x, heads.combine(self.probs_dropout(probs, training=training), value),
                      training=training)
        pooled = self.pool(x, mask=mask)
        return (pooled, tuple(scores)) if return_attention_scores else pooled


@keras.saving.register_keras_serializable(package="vt_keras")
class CrossModalTransformerEncoder(_EncoderBase):
    """Cross-modal Transformer encoder over video and audio, pooled and joined.

    Each of `num_layers` layers applies `CrossModalMultiHeadAttention` to both
    streams, then per stream the post-norm residuals and feed-forward net of
    `TransformerEncoder`. Each stream is then pooled over its valid frames and
    the two vectors are concatenated. Goyal et al. found no gain beyond two
    cross-modal layers.

    Args:
        num_layers, num_heads, key_dim, intermediate_dim, dropout, pooling:
            as in `TransformerEncoder`, per modality.
        transform, transform_kernel_size: the cross-modal transform F ("conv",
            "separable" or "dense"), see `CrossModalMultiHeadAttention`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(video [B, T, Dv], audio [B, T, Da])`.
        mask: optional `(video_mask, audio_mask)`, each `[B, T]` bool or None.
        correlation: optional `[B]` or `[B, 1]` gate on the cross-modal terms.
        training: enables dropout.
        return_attention_scores: if True, also return each layer's float32
            probabilities `(video [B, H, T, T], audio [B, H, T, T])`, cross-modal
            term included, a tuple of `num_layers` pairs.

    Returns:
        `[B, Dv + Da]` (`[B, 2Dv + 2Da]` for "mean_max"), and the scores if
        asked for.

    Example:
    >>> encoder = CrossModalTransformerEncoder(num_layers=1, num_heads=2, key_dim=8)
    >>> encoder((np.zeros((2, 10, 16), "f"), np.zeros((2, 10, 4), "f"))).shape
    TensorShape([2, 20])

    Reference: Goyal et al., "Cross-modal Learning for Multi-modal Video
    Categorization", 2020.
    """

    def __init__(self, num_layers=2, num_heads=4, key_dim=64, intermediate_dim=512, dropout=0.1,
                 pooling="mean", transform="conv", transform_kernel_size=3, **kwargs):
        super().__init__(num_layers, num_heads, key_dim, intermediate_dim, dropout, pooling,
                         **kwargs)
        self.transform = transform
        self.transform_kernel_size = transform_kernel_size
        self.attention_layers = [
            CrossModalMultiHeadAttention(
                num_heads, key_dim, transform=transform,
                transform_kernel_size=transform_kernel_size, dropout=dropout,
                dtype=self.dtype_policy, name=f"cross_modal_attention_{i}")
            for i in range(num_layers)]
        self.video_blocks = self._blocks("video_")
        self.audio_blocks = self._blocks("audio_")

    def build(self, input_shape):
        video_shape, audio_shape = checks.pair_of_shapes(self, input_shape)
        checks.frames_shape(self, video_shape, "video")
        checks.frames_shape(self, audio_shape, "audio")
        checks.same_time_axis(self, video_shape, audio_shape)
        for attention, video_block, audio_block in zip(
                self.attention_layers, self.video_blocks, self.audio_blocks):
            attention.build((video_shape, audio_shape))
            video_block.build(video_shape)
            audio_block.build(audio_shape)
        self.built = True

    def call(self, inputs, mask=None, correlation=None, training=None,
             return_attention_scores=False):
        video, audio = checks.pair(self, inputs, "inputs")
        video_mask, audio_mask = checks.pair(self, mask, "mask")
        masks = None if video_mask is None and audio_mask is None else (video_mask, audio_mask)
        scores = []
        for attention, video_block, audio_block in zip(
                self.attention_layers, self.video_blocks, self.audio_blocks):
            attended_v, attended_a, probs = attention(
                (video, audio), mask=masks, correlation=correlation, training=training,
                return_attention_scores=True)
            scores.append(probs)
            video = video_block(video, attended_v, training=training)
            audio = audio_block(audio, attended_a, training=training)
        pooled = [self.pool(video, mask=video_mask), self.pool(audio, mask=audio_mask)]
        pooled = ops.concatenate(pooled, axis=-1)
        return (pooled, tuple(scores)) if return_attention_scores else pooled

    def get_config(self):
        config = super().get_config()
        config.update(transform=self.transform, transform_kernel_size=self.transform_kernel_size)
        return config
