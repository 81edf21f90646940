"""Centered kernel alignment (CKA) between two sets of representations.

CKA (Kornblith et al., 2019) compares the inter-example similarity structure
of two representations of the same N examples. It is invariant to orthogonal
transforms and isotropic scaling of either side, and it is differentiable, so
Yun et al. ("Modality Alignment between Deep Representations for Effective
Video-and-Language Learning", LREC 2022) maximise it between the video and the
text embeddings of a batch as an auxiliary loss: `L = L_orig - λ · CKA`.

Four estimators are offered:

- linear, biased: `‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)` on column-centred features,
  O(N·d²) and precise in float32 even with large offsets;
- RBF, biased: gram matrices `exp(-D² / (2 θ² median(D²)))`, centred;
- debiased linear / RBF: the unbiased HSIC estimator of Song et al. (2012),
  which needs N ≥ 4 and removes the upward bias of small batches.
"""
import keras
from keras import ops

from vt_keras.errors import ConfigError, UserError

KERNELS = ("linear", "rbf")


def min_samples(debiased):
    """The smallest N an estimator is defined for: 4 debiased, 2 biased."""
    return 4 if debiased else 2


def cka(x, y, kernel="linear", debiased=False, rbf_threshold=1.0, epsilon=1e-12, mask=None):
    """Centered kernel alignment of two representations of the same examples.

    Computed in float32 (float64 inputs stay float64); bfloat16 and float16
    inputs are cast up. Constant or collapsed features give 0 with finite
    gradients instead of 0/0.

    Args:
        x: `[N, d1]` features; row i describes example i.
        y: `[N, d2]` features of the same N examples.
        kernel: `"linear"` or `"rbf"`.
        debiased: use the unbiased HSIC estimator (Song et al., 2012). Needs
            N ≥ 4 and may be slightly negative for unrelated features.
        rbf_threshold: θ in the RBF bandwidth `σ² = θ² · median(D²)`, the
            median over all N² squared distances (zero diagonal included).
        epsilon: added under every square root that normalises, so that
            zero-variance inputs give finite values and gradients.
        mask: optional `[N]` boolean; only rows where it is true are used
            (their count may then be below the minimum, which gives 0).

    Returns:
        A scalar tensor, float32 (float64 for float64 inputs), in [0, 1] for
        the biased estimators.

    Raises:
        UserError: for ranks other than 2, different static N, N below the
            estimator's minimum (2 biased, 4 debiased) when N is static and no
            mask is given, or an unknown kernel.

    Example:
    >>> x = np.random.randn(64, 16).astype("float32")
    >>> float(cka(x, x @ np.linalg.qr(np.random.randn(16, 16))[0]))  # ≈ 1.0
    """
    if kernel not in KERNELS:
        raise ConfigError(f"cka: kernel must be one of {KERNELS}; got {kernel!r}")
    if not rbf_threshold > 0:
        raise ConfigError(f"cka: rbf_threshold must be > 0; got {rbf_threshold!r}")
    x, y = _as_float(x), _as_float(y)
    if len(x.shape) != 2 or len(y.shape) != 2:
        raise UserError(
            f"cka: expected x [N, d1] and y [N, d2]; got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    n_x, n_y = x.shape[0], y.shape[0]
    if n_x is not None and n_y is not None and n_x != n_y:
        raise UserError(f"cka: x and y need the same number of rows; got {n_x} and {n_y}")
    n_static = n_x if n_x is not None else n_y
    if mask is None and n_static is not None and n_static < min_samples(debiased):
        raise UserError(
            f"cka: the {'debiased' if debiased else 'biased'} estimator needs at least "
            f"{min_samples(debiased)} rows; got N={n_static}"
        )
    dtype = "float64" if "float64" in (x.dtype, y.dtype) else "float32"
    x, y = ops.cast(x, dtype), ops.cast(y, dtype)
    if mask is None:
        w = ops.ones_like(x[:, 0])
    else:
        w = ops.cast(ops.reshape(ops.convert_to_tensor(mask), (-1,)), dtype)
    n = ops.sum(w)

    # Padded rows may hold anything, even inf; zero them before any arithmetic.
    x = ops.where(w[:, None] > 0, x, 0.0)
    y = ops.where(w[:, None] > 0, y, 0.0)
    xc, yc = _center(x, w), _center(y, w)
    if kernel == "linear":
        value = _linear_cka(xc, yc, n, debiased, epsilon)
    else:
        k = _rbf_gram(xc, w, rbf_threshold, epsilon)
        l = _rbf_gram(yc, w, rbf_threshold, epsilon)
        center = _u_center if debiased else _double_center
        value = _cosine(center(k, w, n), center(l, w, n), epsilon)
    # Below the minimum the formulas divide by zero; the safe denominators
    # above keep the discarded branch finite, so its gradient is zero, not NaN.
    return ops.where(n >= min_samples(debiased), value, ops.zeros_like(value))


def _as_float(x):
    x = ops.convert_to_tensor(x)
    if x.dtype not in ("float32", "float64"):
        x = ops.cast(x, "float32")
    return x


def _center(x, w):
    """Subtracts the column means of the rows where `w` is 1; zeros other rows."""
    # Shifting by one valid row first is exact (Sterbenz) and removes a large
    # common offset before the mean is taken, so float32 keeps the small
    # differences that CKA is made of.
    first = w * ops.cast(ops.cumsum(w) == 1.0, w.dtype)
    x = x - ops.sum(x * first[:, None], axis=0, keepdims=True)
    mean = ops.sum(x * w[:, None], axis=0, keepdims=True) / ops.maximum(ops.sum(w), 1.0)
    return (x - mean) * w[:, None]


def _unit(x, epsilon):
    # sqrt(Σx² + ε) rather than a norm op: the norm's gradient is NaN at 0.
    return x / ops.sqrt(ops.sum(ops.square(x)) + epsilon)


def _linear_cka(xc, yc, n, debiased, epsilon):
    # CKA is scale invariant, so unit Frobenius norms cost nothing and keep
    # the fourth powers below from overflowing float32 for large features.
    x, y = _unit(xc, epsilon), _unit(yc, epsilon)
    if not debiased:
        xy = ops.sum(ops.square(ops.matmul(ops.transpose(y), x)))
        xx = ops.sqrt(ops.sum(ops.square(ops.matmul(ops.transpose(x), x))) + epsilon)
        yy = ops.sqrt(ops.sum(ops.square(ops.matmul(ops.transpose(y), y))) + epsilon)
        return xy / (xx * yy)
    rx, ry = ops.sum(ops.square(x), axis=1), ops.sum(ops.square(y), axis=1)
    sx, sy = ops.sum(rx), ops.sum(ry)
    # Song et al.'s HSIC₁ for K = XXᵀ, L = YYᵀ with centred X, Y (so K1 = 0),
    # times n(n-3), which cancels in the ratio: with r the row norms²,
    # tr(K̃L̃) = ‖YᵀX‖² - r_x·r_y, 1ᵀK̃1 = -‖X‖², 1ᵀK̃L̃1 = r_x·r_y.
    c1 = 1.0 / ops.maximum((n - 1.0) * (n - 2.0), 1.0)
    c2 = n / ops.maximum(n - 2.0, 1.0)

    def hsic(a, b, ra, rb, sa, sb):
        return ops.sum(ops.square(ops.matmul(ops.transpose(b), a))) + sa * sb * c1 - c2 * ops.sum(ra * rb)

    xy = hsic(x, y, rx, ry, sx, sy)
    xx = hsic(x, x, rx, rx, sx, sx)
    yy = hsic(y, y, ry, ry, sy, sy)
    # xx and yy are sums of squares of U-centred grams, ≥ 0 up to rounding.
    return xy / (ops.sqrt(ops.maximum(xx, 0.0) + epsilon) * ops.sqrt(ops.maximum(yy, 0.0) + epsilon))


def _rbf_gram(xc, w, threshold, epsilon):
    """`exp(-D² / (2 θ² median(D²)))` over the rows where `w` is 1."""
    sq = ops.sum(ops.square(xc), axis=1)
    d2 = ops.maximum(sq[:, None] + sq[None, :] - 2.0 * ops.matmul(xc, ops.transpose(xc)), 0.0)
    size = ops.shape(d2)[0]
    off_diagonal = ops.arange(size)[:, None] != ops.arange(size)[None, :]
    d2 = ops.where(off_diagonal, d2, 0.0)
    sigma2 = ops.stop_gradient(threshold**2 * _masked_median(d2, w))
    return ops.exp(-d2 / (2.0 * ops.maximum(sigma2, epsilon)))


def _masked_median(d2, w):
    """numpy's median of the entries of `d2` whose row and column are valid."""
    valid = (w[:, None] * w[None, :]) > 0
    # Invalid pairs sort last; a leading 0 (≤ every distance, so it only
    # shifts positions by one) keeps the sort non-empty when N = 0.
    big = ops.max(d2, initial=0.0) + 1.0
    flat = ops.reshape(ops.where(valid, d2, big), (-1,))
    flat = ops.sort(ops.concatenate([ops.zeros((1,), flat.dtype), flat]))
    count = ops.cast(ops.sum(w) ** 2, "int32")
    last = ops.shape(flat)[0] - 1
    lo = ops.clip(1 + (count - 1) // 2, 0, last)
    hi = ops.clip(1 + count // 2, 0, last)
    return 0.5 * (ops.take(flat, lo) + ops.take(flat, hi))


def _double_center(k, w, n):
    """`HKH` over the valid rows (Kornblith et al.'s biased HSIC)."""
    ww = w[:, None] * w[None, :]
    k = k * ww
    row = ops.sum(k, axis=1) / ops.maximum(n, 1.0)
    total = ops.sum(row) / ops.maximum(n, 1.0)
    return (k - row[:, None] - row[None, :] + total) * ww


def _u_center(k, w, n):
    """The U-centred gram: ⟨U(K), U(L)⟩ = n(n-3)·HSIC₁ of Song et al. (2012)."""
    size = ops.shape(k)[0]
    off_diagonal = ops.cast(ops.arange(size)[:, None] != ops.arange(size)[None, :], k.dtype)
    mask = w[:, None] * w[None, :] * off_diagonal
    # U-centring ignores a constant added to the off-diagonal entries;
    # removing their mean first makes a constant kernel (collapsed features)
    # centre to exact zeros instead of rounding noise that the cosine would
    # then normalise up to a spurious value.
    k = k - ops.sum(k * mask) / ops.maximum(n * (n - 1.0), 1.0)
    k = k * mask
    row = ops.sum(k, axis=1) / ops.maximum(n - 2.0, 1.0)
    total = ops.sum(k) / ops.maximum((n - 1.0) * (n - 2.0), 1.0)
    return (k - row[:, None] - row[None, :] + total) * mask


def _cosine(a, b, epsilon):
    a = a / ops.sqrt(ops.sum(ops.square(a)) + epsilon)
    b = b / ops.sqrt(ops.sum(ops.square(b)) + epsilon)
    return ops.sum(a * b)


@keras.saving.register_keras_serializable(package="vt_keras")
class CKALoss(keras.losses.Loss):
    """`1 - CKA(y_true, y_pred)`: pulls `y_pred`'s similarity structure to `y_true`'s.

    For `compile()` users that align a representation with a target one; the
    paper's `-λ · CKA` term has the same gradient (up to λ). Sample weights
    are not meaningful for a batch-level loss and are ignored.

    Args:
        kernel, debiased, rbf_threshold, epsilon: as in `cka`.
        gather: `gather(x, axis=0)` applied to both inputs before CKA; `None`
            is the identity. Pass `vt_keras.distributed.replica_gather` to use
            the global batch under a strategy.
        name: the loss name.

    Call: `loss(y_true [N, d1], y_pred [N, d2]) -> scalar`.

    Example:
    >>> model.compile(optimizer="adam", loss=CKALoss(debiased=True))
    """

    def __init__(
        self,
        kernel="linear",
        debiased=False,
        rbf_threshold=1.0,
        epsilon=1e-12,
        gather=None,
        name="cka_loss",
        **kwargs,
    ):
        kwargs.setdefault("reduction", None)
        super().__init__(name=name, **kwargs)
        self.kernel = kernel
        self.debiased = debiased
        self.rbf_threshold = rbf_threshold
        self.epsilon = epsilon
        self.gather = gather

    def call(self, y_true, y_pred):
        if self.gather is not None:
            y_true, y_pred = self.gather(y_true), self.gather(y_pred)
        value = cka(
            ops.reshape(y_true, (ops.shape(y_true)[0], -1)),
            ops.reshape(y_pred, (ops.shape(y_pred)[0], -1)),
            kernel=self.kernel,
            debiased=self.debiased,
            rbf_threshold=self.rbf_threshold,
            epsilon=self.epsilon,
        )
        return 1.0 - value

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel": self.kernel,
                "debiased": self.debiased,
                "rbf_threshold": self.rbf_threshold,
                "epsilon": self.epsilon,
                "gather": None
                if self.gather is None
                else keras.saving.serialize_keras_object(self.gather),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("gather") is not None:
            config["gather"] = keras.saving.deserialize_keras_object(config["gather"])
        return cls(**config)
