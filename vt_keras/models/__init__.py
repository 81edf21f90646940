"""vt_keras.models."""
from vt_keras.models.dual_encoder import DualEncoder  # noqa: F401
