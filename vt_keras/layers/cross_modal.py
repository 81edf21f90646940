"""What the cross-modal layers share: the CM-G gate and the forms of the transform F.

Goyal et al. ("Cross-modal Learning for Multi-modal Video Categorization",
2020) add to each modality's attention (or assignment) a learned ReLU
transform `F` of the other modality's, optionally gated by the correlation
tower's probability g (CM-G).
"""
from keras import ops

# The forms of F that the attention layers offer (see their docstrings).
TRANSFORMS = ("conv", "dense")
# Stands in for -inf before a softmax: finite, so an all-padded row stays NaN-free.
MASK_LOGIT = -1e9


def correlation_gate(correlation, rank):
    """`[B]` or `[B, 1]` correlation, float32, broadcastable to a rank-`rank` tensor."""
    correlation = ops.cast(correlation, "float32")
    return ops.reshape(correlation, (-1,) + (1,) * (rank - 1))
