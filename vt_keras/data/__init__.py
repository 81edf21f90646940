"""vt_keras.data."""
