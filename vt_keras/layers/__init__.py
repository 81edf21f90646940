"""vt_keras.layers."""
