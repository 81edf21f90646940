"""Stateless random draws on JAX, for `vt_keras.backend`."""
import jax
import jax.numpy as jnp


def stateless_uniform(shape, seed, dtype="float32"):
    seed = jnp.asarray(seed).astype(jnp.uint32)
    return jax.random.uniform(jax.random.wrap_key_data(seed, impl="threefry2x32"), tuple(shape), dtype=dtype)
