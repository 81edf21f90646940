"""Temporal data augmentation of the VT-TWINS release: a likely local shuffle of a sequence's rows.

`temporal_augment` reorders each sequence by a permutation that moves no row
by more than `max_shift`, drawn by how little it changes the sequence's
self-similarity (Ko et al. 2022, the release's `TDA` module, which the
release leaves switched off). `local_permutations` enumerates those
permutations; `next_seed` gives a second random stream from the same seed
(the captions' beside the clips'). Used by `vt_keras.losses.vt_twins`.
"""
import functools

import keras
import numpy as np

from vt_keras.backend import stateless_uniform
from vt_keras.errors import ConfigError, UserError

_MAX_PERMUTATIONS = 20000


@functools.lru_cache(maxsize=None)
def local_permutations(n, max_shift=2):
    """All permutations π of `range(n)` with `|π(i) − i| ≤ max_shift`, `[P, n]` int32.

    400 of them for n = 8 and max_shift = 2, the identity first.
    """
    out, current, used = [], [], [False] * n

    def extend(i):
        if len(out) > _MAX_PERMUTATIONS:
            return
        if i == n:
            out.append(list(current))
            return
        for j in range(max(0, i - max_shift), min(n, i + max_shift + 1)):
            # A value left behind by more than max_shift can never be placed.
            if not used[j] and all(used[k] for k in range(0, max(0, i + 1 - max_shift)) if k != j):
                used[j] = True
                current.append(j)
                extend(i + 1)
                current.pop()
                used[j] = False

    extend(0)
    if len(out) > _MAX_PERMUTATIONS:
        raise ConfigError(
            f"vt_twins_loss: augment=True enumerates the local permutations of the {n} clips; "
            f"more than {_MAX_PERMUTATIONS} exist for n = {n}, expected n <= 12."
        )
    return np.asarray(out, dtype="int32")


def temporal_augment(x, lengths, max_shift=2, sharpness=50.0, seed=None):
    """The released code's temporal data augmentation: a likely local shuffle.

    Call: `temporal_augment(x [B, n, d], lengths [B]) → [B, n, d]`. For each
    sequence, every permutation π moving no row by more than `max_shift` is
    scored by how much it changes the self-similarity `A = −x xᵀ`,
    `‖A − A[π][:, π]‖_F`; one is drawn with probability
    `softmax(−sharpness · score)` and the rows are reordered by it. Rows at
    or past `lengths` (padding, at the end) stay in place. Gradients flow to
    `x` through the reordering; the draw itself is not differentiated.

    `seed` is an int, a `keras.random.SeedGenerator`, None (Keras' global
    generator) or a stateless seed: an integer tensor of shape `[2]`, whose
    draws are a pure function of it and touch no generator state. Derive it
    from the step (and the replica) where a `SeedGenerator`'s state cannot
    be updated, e.g. inside a `tf.distribute` replica.

    Example:
        >>> clips = temporal_augment(clips, lengths, seed=keras.random.SeedGenerator(0))
        >>> clips = temporal_augment(clips, lengths, seed=keras.ops.array([step, replica], "int32"))

    Implements the `TDA` module of the VT-TWINS release (Ko et al. 2022),
    which the release itself leaves switched off.
    """
    n = x.shape[1]
    if n is None:
        raise UserError(f"temporal_augment: the number of clips must be static, found shape {x.shape}.")
    perms = keras.ops.convert_to_tensor(local_permutations(n, max_shift))
    count = perms.shape[0]
    sim = keras.ops.stop_gradient(-keras.ops.matmul(x, keras.ops.swapaxes(x, 1, 2)))
    batch = keras.ops.shape(x)[0]
    rows = keras.ops.take(sim, perms, axis=1)  # [B, P, n, n]: rows permuted
    cols = keras.ops.broadcast_to(perms[None, :, None, :], (batch, count, n, n))
    permuted = keras.ops.take_along_axis(rows, cols, axis=3)
    score = keras.ops.sqrt(keras.ops.sum(keras.ops.square(sim[:, None] - permuted), axis=(2, 3)))
    moves_padding = keras.ops.any(
        (keras.ops.arange(n)[None, None, :] >= lengths[:, None, None]) & (perms[None] != keras.ops.arange(n)[None, None, :]),
        axis=2,
    )
    logits = keras.ops.where(moves_padding, -np.inf, -sharpness * keras.ops.cast(score, "float32"))
    choice = _draw(logits, seed)
    order = keras.ops.take(perms, choice, axis=0)
    return keras.ops.take_along_axis(x, order[:, :, None], axis=1)


def _is_stateless(seed):
    return seed is not None and not isinstance(seed, (int, keras.random.SeedGenerator))


def _draw(logits, seed):
    """One category per row of `logits` `[B, P]` (int `[B]`), seeded as `temporal_augment` says."""
    if not _is_stateless(seed):
        return keras.random.categorical(logits, 1, seed=seed)[:, 0]
    # Gumbel-max over stateless uniforms: argmax(logits + G) is distributed as softmax(logits).
    uniform = stateless_uniform(keras.ops.shape(logits), seed)
    gumbel = -keras.ops.log(-keras.ops.log(keras.ops.clip(uniform, 1e-20, 1.0)))
    return keras.ops.argmax(logits + gumbel, axis=-1)


def next_seed(seed):
    """The captions' seed: another stream than the clips' (a SeedGenerator advances by itself)."""
    if isinstance(seed, int):
        return seed + 1
    if _is_stateless(seed):
        return keras.ops.convert_to_tensor(seed, "int32") + keras.ops.convert_to_tensor([0, 1], "int32")
    return seed
