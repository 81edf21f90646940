"""A cheap form of the cross-modal Transformer's F, computed from queries and keys.

Goyal et al.'s F maps the other modality's per-head attention logits
`L = Q K^T` (`[T, T]` per head) to a term added to this modality's logits.
As a k×k convolution of the map (`CrossModalMultiHeadAttention`,
`transform="conv"`) it costs k² multiply-adds per map entry and, in the
backward pass, a filter gradient that reduces over every entry. Because L is
a product, a convolution whose kernel has rank 1, `W = a b^T`, moves onto the
`[T, dk]` queries and keys:

    Σ_{s,u} a_s b_u L[q + s − c, t + u − c] = (Σ_s a_s S_s Q)_q · (Σ_u b_u S_u K)_t     (c = (k − 1) // 2)

where `S_s` moves a sequence by `s − c` frames with zeros coming in (the
zero padding of a "same" convolution). So `F(L) = ReLU(Q̃ K̃^T + bias)` with
`Q̃ = a ⊛ Q` and `K̃ = b ⊛ K` filtered along time: one product as cheap as
the logits themselves, the filters on `[T, dk]`.

This equals the "conv" form exactly when the "conv" kernel has rank 1, and
approximates it otherwise. A rank-1 kernel still expresses what F is for
here, a move of the map by one offset along both time axes (a lead or lag
between the modalities: `a = b = e_{c−δ}`) and a scaling, and a blur of both
time axes alike; it cannot express, for example, a blur along the diagonal
only.
"""
import keras
from keras import ops


def temporal_filter(x, kernel):
    """Per-head filters along time of `[B, T, H, dk]` x, `[B, T, H, dk]`.

    `kernel [k, H]` is one filter per head, applied to each of the head's dk
    channels with "same" zero padding (`(k − 1) // 2` frames before, the
    padding of a "same" convolution of the logit map). One depthwise
    convolution over `[B, T, H · dk]`: slices and sums of moved copies cost
    several times the logit product on TensorFlow's CPU kernels.
    """
    batch, steps, heads, dim = ops.shape(x)[0], ops.shape(x)[1], x.shape[2], x.shape[3]
    kernel = ops.reshape(ops.repeat(kernel[:, :, None], dim, axis=2), (kernel.shape[0], heads * dim, 1))
    out = ops.depthwise_conv(ops.reshape(x, (batch, steps, heads * dim)), kernel, padding="same")
    return ops.reshape(out, (batch, steps, heads, dim))


@keras.saving.register_keras_serializable(package="vt_keras")
class SeparableLogitTransform(keras.layers.Layer):
    """`ReLU(F(Q K^T))` for a rank-1 k×k kernel per head, from queries and keys.

    The "separable" F of `CrossModalMultiHeadAttention` (see the module
    docstring for what it equals). Runs in float32 whatever the policy, like
    the logits it is added to.

    Args:
        num_heads: H, one F per head.
        kernel_size: k, the kernel's size along each time axis (a lead or lag
            of up to k // 2 frames).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        query: float32 `[B, T, H, dk]`, the other modality's scaled queries,
            zero at its padded frames.
        key: float32 `[B, T, H, dk]`, its keys, zero at its padded frames.

    Returns:
        float32 `[B, H, T, T]` (queries by keys),
        `ReLU(bias_h + (a_h ⊛ Q)(b_h ⊛ K)^T)`; the weights are
        `query_kernel [k, H]` (a), `key_kernel [k, H]` (b) and `bias [H]`.

    Example:
    >>> f = SeparableLogitTransform(num_heads=2, kernel_size=3)
    >>> q = np.zeros((1, 5, 2, 4), "f")
    >>> tuple(f(q, q).shape)
    (1, 2, 5, 5)

    Reference: Goyal et al., "Cross-modal Learning for Multi-modal Video
    Categorization", 2020 (F of the cross-modal Transformer).
    """

    def __init__(self, num_heads, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.kernel_size = num_heads, kernel_size

    def build(self, query_shape=None, key_shape=None):
        shape = (self.kernel_size, self.num_heads)
        self.query_kernel, self.key_kernel = (
            self.add_weight(shape=shape, initializer="glorot_uniform", name=name)
            for name in ("query_kernel", "key_kernel"))
        self.bias = self.add_weight(shape=(self.num_heads,), initializer="zeros", name="bias")
        self.built = True

    def call(self, query, key):
        query = temporal_filter(ops.cast(query, "float32"), ops.cast(self.query_kernel, "float32"))
        key = temporal_filter(ops.cast(key, "float32"), ops.cast(self.key_kernel, "float32"))
        # The bias rides in the product as one more channel (ones against the
        # bias): one pass over the [B, H, T, T] map fewer, forward and backward.
        ones = ops.ones_like(query[..., :1])
        bias = ops.broadcast_to(ops.cast(self.bias, "float32")[:, None], ops.shape(key[..., :1]))
        logits = ops.einsum("bqhk,bthk->bhqt", ops.concatenate([query, ones], -1), ops.concatenate([key, bias], -1))
        return ops.relu(logits)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, kernel_size=self.kernel_size)
        return config
