"""Stateless random draws on PyTorch, for `vt_keras.backend`.

PyTorch has no stateless generator that takes a tensor seed: a fresh
`torch.Generator` seeded from the two seed words gives the same pure function
of the seed (reading the seed syncs with the host once).
"""
import keras
import torch


def stateless_uniform(shape, seed, dtype="float32"):
    words = [int(w) & 0xFFFFFFFF for w in torch.as_tensor(seed).reshape(-1).tolist()]
    generator = torch.Generator(device="cpu").manual_seed((words[0] << 32) | words[1])
    draws = torch.rand(tuple(shape), generator=generator, dtype=getattr(torch, dtype))
    return keras.ops.convert_to_tensor(draws)  # onto Keras' device
