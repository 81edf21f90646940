"""vt_keras.models."""
