"""Stateless random draws on TensorFlow, for `vt_keras.backend`."""
import tensorflow as tf


def stateless_uniform(shape, seed, dtype="float32"):
    return tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int32), dtype=dtype)
