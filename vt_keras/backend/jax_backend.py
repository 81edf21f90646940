"""JAX's part of `vt_keras.backend`: stateless draws and gradients."""
import jax
import jax.numpy as jnp


def stateless_uniform(shape, seed, dtype="float32"):
    key = jax.random.wrap_key_data(jnp.asarray(seed).astype(jnp.uint32), impl="threefry2x32")
    return jax.random.uniform(key, tuple(shape), dtype=dtype)


def value_and_grad(fn, args):
    # Compiled: op-by-op JAX compiles every primitive it meets on first use, which
    # costs seconds per small function. `fn` must then be pure (no variable updates).
    args = [jnp.asarray(a) for a in args]
    value, grads = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))(*args)
    return value, list(grads)
