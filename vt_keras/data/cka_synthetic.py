"""Paired synthetic "modalities" for the CKA experiment of Yun et al. (Section 4.1.1).

Modality A is a single 64-d multivariate normal with a random full
covariance; modality B is a mixture of `num_components` multivariate normals
with different means, weights and random anisotropic covariances. Each A is
paired one to one with a B, and encoders are trained to give corresponding
pairs a high cosine similarity.

Two pairings:

- `"random"`, the paper's literal setting: both sets are sampled and then
  paired by a random permutation. The correspondence is arbitrary, so it can
  only be memorised: metrics on held-out pairs measure nothing (only the
  training-pair metrics mean anything).
- `"structured"` (default): B is a fixed random function of A, so the
  correspondence is learnable and carries over to held-out pairs. A is
  whitened (`u = L_A⁻¹ (a − μ_A)`, exactly N(0, I)) and rotated by a fixed
  random orthogonal matrix. Its first two coordinates, read in polar form,
  choose the mixture component: the angle falls into one of `num_components`
  sectors whose widths are the mixture weights. The angle is then stretched
  back to a full turn within its sector, which makes `z` (radius and stretched
  angle, then the other 62 coordinates) exactly N(0, I) and independent of the
  component, and `b = μ_k + L_k z`. So B is *exactly* a sample of the mixture,
  pairs are one to one, and the map is piecewise linear in A up to the polar
  stretch: hard, but learnable.

Everything is drawn from `seed`; the held-out pairs come from the same
distributions and map, after the training pairs.

Example:
>>> pairs = make_pairs(num_train=1000, num_heldout=200)
>>> pairs["train"].a.shape, pairs["heldout"].b.shape
((1000, 64), (200, 64))
"""
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from vt_keras.errors import ConfigError

PAIRINGS = ("structured", "random")


@dataclasses.dataclass(frozen=True)
class PairedSamples:
    """Corresponding rows of the two modalities (read-only arrays)."""

    a: np.ndarray  # [N, dim] float32, modality A
    b: np.ndarray  # [N, dim] float32, modality B; row i pairs with a[i]
    component: np.ndarray  # [N] int32, the mixture component b[i] was drawn from


class _Distributions:
    """The fixed random parameters: A's normal, B's mixture and the A → B map."""

    def __init__(self, rng, dim, num_components):
        self.dim = dim
        self.mean_a = rng.normal(size=dim)
        # A random full covariance with a spread of scales (condition number 100).
        self.chol_a = np.linalg.cholesky(_random_covariance(rng, dim, 0.1, 10.0))
        # Uneven weights; means about 11 apart (N(0, I) in 64-d) while no
        # component spreads more than 0.7 in any direction, each with its own
        # orientation and anisotropy: distinct clusters of different shapes.
        self.weights = rng.dirichlet(np.full(num_components, 3.0))
        self.edges = np.concatenate([[0.0], np.cumsum(self.weights)])
        self.edges[-1] = 1.0
        self.means_b = rng.normal(scale=1.0, size=(num_components, dim))
        self.chols_b = np.stack(
            [np.linalg.cholesky(_random_covariance(rng, dim, 0.02, 0.5)) for _ in range(num_components)])
        self.rotation = _random_orthogonal(rng, dim)

    def sample_a(self, rng, n):
        """`(a, u)`: samples of A and their whitened coordinates."""
        u = rng.standard_normal(size=(n, self.dim))
        return self.mean_a + u @ self.chol_a.T, u

    def b_of(self, u):
        """`(b, component)`: the B that the whitened A `u` maps to."""
        p = u @ self.rotation
        radius = np.hypot(p[:, 0], p[:, 1])
        turn = np.mod(np.arctan2(p[:, 1], p[:, 0]) / (2.0 * np.pi), 1.0)  # uniform on [0, 1)
        k = np.clip(np.searchsorted(self.edges, turn, side="right") - 1, 0, len(self.weights) - 1)
        # Uniform within the sector, so the stretched angle is uniform and
        # independent of k; with the independent χ² radius, (z0, z1) is N(0, I₂).
        stretched = 2.0 * np.pi * (turn - self.edges[k]) / self.weights[k]
        z = np.concatenate([(radius * np.cos(stretched))[:, None], (radius * np.sin(stretched))[:, None],
                            p[:, 2:]], axis=1)
        b = self.means_b[k] + np.einsum("nij,nj->ni", self.chols_b[k], z)
        return b, k.astype(np.int32)


def _random_orthogonal(rng, dim):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def _random_covariance(rng, dim, low, high):
    """`Q diag(λ) Qᵀ` with a random rotation Q and λ log-uniform in [low, high]."""
    q = _random_orthogonal(rng, dim)
    eigenvalues = np.exp(rng.uniform(np.log(low), np.log(high), size=dim))
    return (q * eigenvalues) @ q.T


def _frozen(x, dtype):
    x = np.ascontiguousarray(x, dtype=dtype)
    x.flags.writeable = False
    return x


@functools.lru_cache(maxsize=8)
def make_pairs(num_train=10000, num_heldout=2000, dim=64, num_components=8, pairing="structured", seed=0):
    """Training and held-out pairs of the two synthetic modalities.

    Args:
        num_train: training pairs (paper: 10,000).
        num_heldout: held-out pairs, drawn after the training pairs.
        dim: dimension of both modalities (paper: 64); at least 2.
        num_components: components of B's mixture.
        pairing: `"structured"` (B a fixed random function of A, learnable) or
            `"random"` (the paper's random one-to-one correspondence).
        seed: seeds every parameter and sample.

    Returns:
        `{"train": PairedSamples, "heldout": PairedSamples}`, float32 features.
        Results are cached per argument tuple, so the arrays are read-only.

    Raises:
        ConfigError: for an unknown pairing or sizes out of range.
    """
    if pairing not in PAIRINGS:
        raise ConfigError(f"data.pairing must be one of {PAIRINGS}; got {pairing!r}")
    for key, value, low in (("num_train", num_train, 1), ("num_heldout", num_heldout, 1), ("dim", dim, 2),
                            ("num_components", num_components, 1)):
        if int(value) < low:
            raise ConfigError(f"data.{key} must be at least {low}; got {value}")
    rng = np.random.default_rng(seed)
    dists = _Distributions(rng, int(dim), int(num_components))
    out = {}
    for split, n in (("train", int(num_train)), ("heldout", int(num_heldout))):
        a, u = dists.sample_a(rng, n)
        b, k = dists.b_of(u)
        if pairing == "random":
            # Both sets have their distributions; only the correspondence is random.
            order = rng.permutation(n)
            b, k = b[order], k[order]
        out[split] = PairedSamples(a=_frozen(a, np.float32), b=_frozen(b, np.float32),
                                   component=_frozen(k, np.int32))
    return out


def train_dataset(samples, batch_size, seed=0, input_context=None):
    """An endless, shuffled `tf.data.Dataset` of `{"a": [B, dim], "b": [B, dim]}` batches.

    Sharded by `input_context` (one shard per input pipeline), reshuffled every
    epoch from `seed`, batched with the remainder dropped so that every
    replica sees the same shapes.
    """
    ds = tf.data.Dataset.from_tensor_slices({"a": samples.a, "b": samples.b})
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    n = len(samples.a)
    return (ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(int(batch_size), drop_remainder=True).prefetch(2))
