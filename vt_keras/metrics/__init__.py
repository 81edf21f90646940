"""vt_keras.metrics."""
