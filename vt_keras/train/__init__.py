"""vt_keras.train."""
