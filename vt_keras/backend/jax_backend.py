"""JAX's part of `vt_keras.backend`: stateless draws and gradients."""
import jax
import jax.numpy as jnp


def stateless_uniform(shape, seed, dtype="float32"):
    key = jax.random.wrap_key_data(jnp.asarray(seed).astype(jnp.uint32), impl="threefry2x32")
    return jax.random.uniform(key, tuple(shape), dtype=dtype)


def value_and_grad(fn, args):
    args = [jnp.asarray(a) for a in args]
    value, grads = jax.value_and_grad(lambda *a: fn(*a), argnums=tuple(range(len(args))))(*args)
    return value, list(grads)
