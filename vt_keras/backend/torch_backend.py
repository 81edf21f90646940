"""PyTorch's part of `vt_keras.backend`: stateless draws and gradients."""
import keras
import torch


def stateless_uniform(shape, seed, dtype="float32"):
    # No stateless generator takes a tensor seed: a fresh generator seeded
    # from the two seed words is the same pure function of the seed.
    words = [int(w) & 0xFFFFFFFF for w in torch.as_tensor(seed).reshape(-1).tolist()]
    generator = torch.Generator(device="cpu").manual_seed((words[0] << 32) | words[1])
    draws = torch.rand(tuple(shape), generator=generator, dtype=getattr(torch, dtype))
    return keras.ops.convert_to_tensor(draws)  # onto Keras' device


def value_and_grad(fn, args):
    args = [keras.ops.convert_to_tensor(a).detach().requires_grad_(True) for a in args]
    value = fn(*args)
    grads = torch.autograd.grad(value, args, allow_unused=True)
    # Detached, like the other backends' results: `np.asarray(value)` then works.
    return value.detach(), [torch.zeros_like(a) if g is None else g for a, g in zip(args, grads)]
