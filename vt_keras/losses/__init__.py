"""vt_keras.losses."""
