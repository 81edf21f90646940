"""vt_keras: Keras 3 layers, losses and a YouTube-8M-style pipeline for multi-modal video learning."""
__version__ = "0.1.0"
