"""vt_keras.layers."""
from vt_keras.layers.heads import ContextGating, MixtureOfExperts  # noqa: F401
from vt_keras.layers.pooling import FramePooling  # noqa: F401
from vt_keras.layers.netvlad import CrossModalNetVLAD, NetVLAD  # noqa: F401
