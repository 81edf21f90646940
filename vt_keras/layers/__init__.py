"""vt_keras.layers."""
from vt_keras.layers.heads import ContextGating, MixtureOfExperts  # noqa: F401
from vt_keras.layers.pooling import FramePooling  # noqa: F401
from vt_keras.layers.frame_embedding import FrameEmbedding  # noqa: F401
from vt_keras.layers.netvlad import CrossModalNetVLAD, NetVLAD  # noqa: F401
from vt_keras.layers.attention_clusters import (  # noqa: F401
    AttentionClusters,
    CrossModalAttentionClusters,
)
from vt_keras.layers.cross_modal_attention import CrossModalMultiHeadAttention  # noqa: F401
from vt_keras.layers.transformer import (  # noqa: F401
    CrossModalTransformerEncoder,
    TransformerEncoder,
)
from vt_keras.layers.logit_transform import SeparableLogitTransform  # noqa: F401
from vt_keras.layers.correlation_tower import CorrelationTower  # noqa: F401
from vt_keras.layers.alignment import CKAAlignment  # noqa: F401
