"""A video–text dual encoder for retrieval with contrastive losses.

Two towers map a video's clips and its captions into one L2-normalised space
of size `embedding_dim`, per clip / per caption and pooled per video:

- video: clip features → dense → optional pre-norm Transformer layers over
  the clips (padded clips removed as keys) → dense → per-clip embeddings; the
  pooled video embedding is the masked mean of the per-clip vectors.
- text: raw caption strings → `TextTokenizer` → token embeddings → masked
  mean over tokens, or one Transformer layer then the masked mean
  (`text_pooling`) → dense → per-caption embeddings; the pooled text
  embedding is the masked mean over the valid captions.

Both pooled outputs are normalised after pooling, so a video's pooled text
embedding and `embed_text` of a single caption agree. Padded clips are zeroed
before anything else and padded captions / tokens are excluded from every
mean, so padding never changes the pooled outputs.

Reference: the dual-encoder set-up of CrossCLR (Zolfaghari et al., ICCV 2021),
trained with CLIP-style InfoNCE (Radford et al., 2021) or CrossCLR.
"""
import math

import keras
from keras import ops

from vt_keras.errors import ConfigError, DataError
from vt_keras.ops import l2_normalize, masked_mean
from vt_keras.text import TextTokenizer

INPUT_KEYS = ("clips", "clip_mask", "captions", "caption_mask")
TEXT_POOLINGS = ("mean", "transformer")


def _unit(x):
    """L2-normalised in float32 (norms stay float32 under mixed precision)."""
    return l2_normalize(ops.cast(x, "float32"))


def _sinusoid_positions(length, width, dtype):
    """`[length, width]` sine/cosine position codes (Vaswani et al., 2017)."""
    half = width // 2
    position = ops.cast(ops.arange(length), "float32")[:, None]
    rates = ops.exp(ops.arange(half, dtype="float32") * (-math.log(10000.0) / max(half, 1)))
    angles = position * rates[None, :]
    codes = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
    if width % 2:
        codes = ops.pad(codes, [[0, 0], [0, 1]])
    return ops.cast(codes, dtype)


class _SelfAttentionBlock(keras.layers.Layer):
    """One pre-norm Transformer layer whose output keeps the sequence.

    Args:
      num_heads: attention heads; `width` must be divisible by it.
      dropout: on attention probabilities and both residual branches.

    Call:
      inputs: `[B, T, D]`; mask: `[B, T]` bool, False on padding (keys only).
      Returns: `[B, T, D]`.
    """

    def __init__(self, num_heads=4, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout = dropout
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ConfigError(f"num_heads: expected a divisor of the width {width}, "
                              f"found {self.num_heads}")
        kw = dict(dtype=self.dtype_policy)
        self.norm_1 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_1", **kw)
        self.norm_2 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_2", **kw)
        self.qkv = keras.layers.Dense(3 * width, name="qkv", **kw)
        self.attention_output = keras.layers.Dense(width, name="attention_output", **kw)
        self.ffn_1 = keras.layers.Dense(2 * width, activation="gelu", name="ffn_1", **kw)
        self.ffn_2 = keras.layers.Dense(width, name="ffn_2", **kw)
        self.drop = keras.layers.Dropout(self.dropout, **kw)
        for layer in (self.norm_1, self.norm_2, self.qkv, self.attention_output, self.ffn_1):
            layer.build(input_shape)
        self.ffn_2.build(tuple(input_shape[:-1]) + (2 * width,))
        self.built = True

    def call(self, inputs, mask=None, training=None):
        batch, length, width = ops.shape(inputs)[0], ops.shape(inputs)[1], inputs.shape[-1]
        heads, head_dim = self.num_heads, inputs.shape[-1] // self.num_heads
        qkv = ops.reshape(self.qkv(self.norm_1(inputs)), (batch, length, 3, heads, head_dim))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = ops.einsum("bqhd,bkhd->bhqk", q, k)
        logits = ops.cast(logits, "float32") / math.sqrt(head_dim)
        if mask is not None:
            logits = ops.where(mask[:, None, None, :], logits, -1e9)
        probs = ops.cast(ops.softmax(logits, axis=-1), inputs.dtype)
        probs = self.drop(probs, training=training)
        attended = ops.reshape(ops.einsum("bhqk,bkhd->bqhd", probs, v), (batch, length, width))
        x = inputs + self.drop(self.attention_output(attended), training=training)
        return x + self.drop(self.ffn_2(self.ffn_1(self.norm_2(x))), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "dropout": self.dropout})
        return config


@keras.saving.register_keras_serializable(package="vt_keras")
class DualEncoder(keras.Model):
    """Video and caption towers into one L2-normalised embedding space.

    Args:
      vocabulary: list of word tokens for the `TextTokenizer` (saved in the
        config, so a `.keras` file carries it).
      embedding_dim: size E of the shared embedding space.
      clip_dim: size of each clip's input features.
      video_transformer_layers: Transformer layers over the clips (0: none).
      text_pooling: "mean" (masked mean of token embeddings) or "transformer"
        (one Transformer layer over the tokens, then the masked mean).
      token_embedding_dim: size of the word embeddings.
      num_heads: attention heads (must divide E and `token_embedding_dim`).
      max_tokens: words kept per caption.
      dropout: dropout rate inside both towers.
      num_oov_buckets: hash buckets for unknown words.

    Call:
      inputs: dict with `clips` float `[B, N, clip_dim]`, `clip_mask` bool
        `[B, N]`, `captions` string `[B, M]`, `caption_mask` bool `[B, M]`
        (as produced by `vt_keras.data.video_text.video_text_dataset`).
      Returns: dict with `video_sequence` `[B, N, E]`, `video_mask` `[B, N]`,
        `video` `[B, E]`, `text_sequence` `[B, M, E]`, `text_mask` `[B, M]`,
        `text` `[B, E]`; embeddings are float32 and unit-norm (zero at
        padded positions).

    Example:

    ```python
    model = DualEncoder(["crack", "eggs"], embedding_dim=32, clip_dim=8)
    out = model({"clips": clips, "clip_mask": clip_mask,
                 "captions": captions, "caption_mask": caption_mask})
    loss = info_nce(out["video"], out["text"], temperature=0.05)
    queries = model.embed_text(tf.constant(["crack the eggs"]))  # [1, 32]
    model.export("serving/")  # signature from `input_signature()`
    ```

    Reference: Zolfaghari et al., "CrossCLR: Cross-modal Contrastive Learning
    For Multi-modal Video Representations", ICCV 2021 (the two-tower set-up).
    """

    def __init__(self, vocabulary, embedding_dim=256, clip_dim=64, video_transformer_layers=1,
                 text_pooling="mean", token_embedding_dim=128, num_heads=4, max_tokens=16,
                 dropout=0.1, num_oov_buckets=8, **kwargs):
        super().__init__(**kwargs)
        if text_pooling not in TEXT_POOLINGS:
            raise ConfigError(f"text_pooling: expected one of {TEXT_POOLINGS}, "
                              f"found {text_pooling!r}")
        self.vocabulary = list(vocabulary)
        self.embedding_dim = embedding_dim
        self.clip_dim = clip_dim
        self.video_transformer_layers = video_transformer_layers
        self.text_pooling = text_pooling
        self.token_embedding_dim = token_embedding_dim
        self.num_heads = num_heads
        self.max_tokens = max_tokens
        self.dropout = dropout
        self.num_oov_buckets = num_oov_buckets

        kw = dict(dtype=self.dtype_policy)
        self.clip_projection = keras.layers.Dense(embedding_dim, name="clip_projection", **kw)
        self.video_blocks = [
            _SelfAttentionBlock(num_heads, dropout, name=f"video_block_{i}", **kw)
            for i in range(video_transformer_layers)
        ]
        self.video_output = keras.layers.Dense(embedding_dim, name="video_output", **kw)
        self.tokenizer = TextTokenizer(self.vocabulary, max_tokens=max_tokens,
                                       num_oov_buckets=num_oov_buckets, name="tokenizer")
        self.token_embedding = keras.layers.Embedding(
            self.tokenizer.vocabulary_size, token_embedding_dim, name="token_embedding", **kw)
        self.text_blocks = []
        if text_pooling == "transformer":
            self.text_blocks = [_SelfAttentionBlock(num_heads, dropout, name="text_block", **kw)]
        self.text_output = keras.layers.Dense(embedding_dim, name="text_output", **kw)
        self.input_dropout = keras.layers.Dropout(dropout, **kw)
        # Every weight's shape follows from the arguments: build now. A model built by its first
        # call would record float32 input specs for its default SavedModel signature, which
        # cannot take the string captions.
        self.build()

    def build(self, input_shape=None):
        del input_shape  # the weights' shapes follow from the constructor's arguments
        if self.built:  # built in __init__ already
            return
        self.clip_projection.build((None, None, self.clip_dim))
        for layer in self.video_blocks + [self.video_output]:
            layer.build((None, None, self.embedding_dim))
        self.token_embedding.build((None, None))
        for layer in self.text_blocks:
            layer.build((None, None, self.token_embedding_dim))
        self.text_output.build((None, self.token_embedding_dim))
        self.built = True

    def _video_tower(self, clips, clip_mask, training=None):
        if clips.shape[-1] is not None and clips.shape[-1] != self.clip_dim:
            raise ConfigError(f"DualEncoder: expected clips with clip_dim={self.clip_dim} "
                              f"features, found {clips.shape[-1]}")
        clip_mask = ops.cast(clip_mask, "bool")
        # Zero padded clips first: whatever they hold cannot reach a sum.
        clips = ops.where(clip_mask[..., None], ops.cast(clips, self.compute_dtype), 0.0)
        x = self.input_dropout(self.clip_projection(clips), training=training)
        if self.video_blocks:
            x = x + _sinusoid_positions(ops.shape(x)[1], self.embedding_dim, x.dtype)
            for block in self.video_blocks:
                x = block(x, mask=clip_mask, training=training)
        x = self.video_output(x)
        sequence = ops.where(clip_mask[..., None], _unit(x), 0.0)
        return sequence, clip_mask, _unit(masked_mean(x, clip_mask, axis=1))

    def _text_tower(self, captions, caption_mask, training=None):
        caption_mask = ops.cast(caption_mask, "bool")
        ids = self.tokenizer(captions)  # [B, M, T]
        batch, num_captions = ops.shape(ids)[0], ops.shape(ids)[1]
        ids = ops.reshape(ids, (-1, self.max_tokens))
        token_mask = ids > 0
        x = self.input_dropout(self.token_embedding(ids), training=training)
        if self.text_blocks:
            x = x + _sinusoid_positions(self.max_tokens, self.token_embedding_dim, x.dtype)
            for block in self.text_blocks:
                x = block(x, mask=token_mask, training=training)
        x = self.text_output(masked_mean(x, token_mask, axis=1))
        x = ops.reshape(x, (batch, num_captions, self.embedding_dim))
        sequence = ops.where(caption_mask[..., None], _unit(x), 0.0)
        return sequence, caption_mask, _unit(masked_mean(x, caption_mask, axis=1))

    def call(self, inputs, training=None):
        missing = [k for k in INPUT_KEYS if not isinstance(inputs, dict) or k not in inputs]
        if missing:
            found = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise DataError(f"DualEncoder inputs: expected a dict with keys {INPUT_KEYS}, "
                            f"missing {missing} (found {found})")
        video_sequence, video_mask, video = self._video_tower(
            inputs["clips"], inputs["clip_mask"], training)
        text_sequence, text_mask, text = self._text_tower(
            inputs["captions"], inputs["caption_mask"], training)
        return {"video_sequence": video_sequence, "video_mask": video_mask, "video": video,
                "text_sequence": text_sequence, "text_mask": text_mask, "text": text}

    def embed_video(self, clips, num_clips):
        """Pooled video embeddings: clips `[N, C, clip_dim]`, num_clips `[N]` → `[N, E]`."""
        mask = ops.arange(ops.shape(clips)[1])[None, :] < ops.cast(num_clips, "int32")[:, None]
        return self._video_tower(clips, mask)[2]

    def embed_text(self, strings):
        """Text embeddings, one caption or query per string: `[N]` → `[N, E]`."""
        captions = ops.expand_dims(strings, 1)
        return self._text_tower(captions, ops.ones(ops.shape(captions), "bool"))[2]

    def input_signature(self):
        """`tf.TensorSpec`s of `call`'s input dict (string captions, bool masks)."""
        # Imported here: models stay on `keras` alone; only this serving spec is TensorFlow's.
        import tensorflow as tf

        return {"clips": tf.TensorSpec([None, None, self.clip_dim], tf.float32, "clips"),
                "clip_mask": tf.TensorSpec([None, None], tf.bool, "clip_mask"),
                "captions": tf.TensorSpec([None, None], tf.string, "captions"),
                "caption_mask": tf.TensorSpec([None, None], tf.bool, "caption_mask")}

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """`keras.Model.export`, with `input_signature()` as the default signature."""
        if input_signature is None and format == "tf_saved_model":
            input_signature = [self.input_signature()]
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocabulary": list(self.vocabulary),
            "embedding_dim": self.embedding_dim,
            "clip_dim": self.clip_dim,
            "video_transformer_layers": self.video_transformer_layers,
            "text_pooling": self.text_pooling,
            "token_embedding_dim": self.token_embedding_dim,
            "num_heads": self.num_heads,
            "max_tokens": self.max_tokens,
            "dropout": self.dropout,
            "num_oov_buckets": self.num_oov_buckets,
        })
        return config
