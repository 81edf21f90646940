"""vt_keras.cli."""
