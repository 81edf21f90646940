"""Symmetric InfoNCE, the CLIP-style contrastive baseline for video–text retrieval.

For a batch of B paired embeddings, row i of `s = v̂ t̂ᵀ / τ` classifies text i
among all texts for video i, and column i classifies video i among all videos
for text i (van den Oord et al., 2018, "Representation Learning with
Contrastive Predictive Coding"; used symmetrically by Radford et al., 2021,
CLIP). The loss is the mean of the two cross-entropies.

The helpers at the bottom (`as_float`, `check_pair`, `unpack`,
`diagonal_mask`, `contrastive_terms`) are shared with
`vt_keras.losses.crossclr`.
"""
import keras
from keras import ops

from vt_keras.distributed import replica_gather
from vt_keras.errors import ConfigError, UserError
from vt_keras.ops import identity_gather, l2_normalize

# Stands in for log(0) for masked logits: finite, so that a row whose every
# entry is masked gives 0 with zero gradients instead of 0/0.
NEG = -1e9


def info_nce(video, text, temperature=0.05, gather=None, normalize=True):
    """Symmetric InfoNCE (CLIP) loss of paired video and text embeddings.

    Computed in float32 (float64 inputs stay float64). With `gather`, every
    replica gathers the global batch and returns the loss over it: the value
    equals the single-device loss on that batch, and so do the gradients when
    each replica contributes `loss / num_replicas` and gradients are summed
    over replicas (the trainer's convention).

    Args:
        video: `[B, d]` video embeddings; row i is paired with `text[i]`.
        text: `[B, d]` text embeddings.
        temperature: τ > 0 that divides the cosine similarities.
        gather: `gather(x, axis=0)` returning the global batch, e.g.
            `vt_keras.distributed.replica_gather`; `None` means identity.
        normalize: L2-normalise the rows first (cosine similarities).

    Returns:
        A scalar: `(CE(s, I) + CE(sᵀ, I)) / 2`, each cross-entropy averaged
        over the (global) batch.

    Raises:
        ConfigError: for a temperature that is not > 0.
        UserError: for inputs that are not `[B, d]` with the same B and d.

    Example:
    >>> v = np.random.randn(8, 16).astype("float32")
    >>> float(info_nce(v, v + 0.01, temperature=0.1))  # small: pairs match
    """
    _check_temperature("info_nce", "temperature", temperature)
    video, text = as_float(video, text)
    check_pair("info_nce", video, text, ("video", "text"), same_width=True)
    gather = gather or identity_gather
    video, text = gather(video), gather(text)
    if normalize:
        video, text = l2_normalize(video), l2_normalize(text)
    logits = ops.matmul(video, ops.transpose(text)) / temperature
    eye = diagonal_mask(ops.shape(logits)[0], ops.shape(logits)[1])
    positives = ops.diagonal(logits)
    video_to_text = contrastive_terms(logits, positives, negatives=~eye)
    text_to_video = contrastive_terms(ops.transpose(logits), positives, negatives=~eye)
    return 0.5 * (ops.mean(video_to_text) + ops.mean(text_to_video))


@keras.saving.register_keras_serializable(package="vt_keras")
class InfoNCELoss(keras.losses.Loss):
    """Keras `Loss` wrapper of `info_nce` for `compile()` users.

    `call(y_true, y_pred)` ignores `y_true`; `y_pred` is a dict
    `{"video": [B, d], "text": [B, d]}` or a pair `(video, text)`. Under a
    `tf.distribute` strategy the loss gathers the global batch with
    `replica_gather` (Keras divides each replica's loss by the number of
    replicas, which is what makes the summed gradients right). `compile()`
    maps one loss over each output of a multi-output model, so `fit()` users
    call it from a layer: `self.add_loss(loss(0.0, (video, text)))`.

    Args:
        temperature: τ of `info_nce`.
        normalize: L2-normalise the embeddings first.
        name, reduction, dtype: as for `keras.losses.Loss`.

    Example:
    >>> loss = InfoNCELoss(temperature=0.05)
    >>> loss(0.0, {"video": v, "text": t})

    Implements the symmetric InfoNCE of CLIP (Radford et al., 2021).
    """

    def __init__(self, temperature=0.05, normalize=True, name="info_nce",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_temperature("InfoNCELoss", "temperature", temperature)
        self.temperature = temperature
        self.normalize = normalize

    def call(self, y_true, y_pred):
        del y_true
        video, text = unpack(y_pred, ("video", "text"), "InfoNCELoss")
        return info_nce(video, text, self.temperature, gather=replica_gather, normalize=self.normalize)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, normalize=self.normalize)
        return config


def _check_temperature(where, key, value):
    if not (isinstance(value, (int, float)) and value > 0):
        raise ConfigError(f"{where}: {key} must be a number > 0; got {value!r}")


def as_float(*tensors):
    """Casts to float32, or float64 when any input is float64 (for exact tests)."""
    tensors = [ops.convert_to_tensor(t) for t in tensors]
    dtype = "float64" if any(t.dtype == "float64" for t in tensors) else "float32"
    return [ops.cast(t, dtype) for t in tensors]


def check_pair(where, a, b, names, same_width):
    """Raises `UserError` unless `a`, `b` are rank 2 with equal static B (and d)."""
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise UserError(
            f"{where}: expected {names[0]} and {names[1]} of shape [B, d]; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] is not None and b.shape[0] is not None and a.shape[0] != b.shape[0]:
        raise UserError(
            f"{where}: {names[0]} and {names[1]} need the same batch size; "
            f"got {a.shape[0]} and {b.shape[0]}"
        )
    if same_width and a.shape[1] is not None and b.shape[1] is not None and a.shape[1] != b.shape[1]:
        raise UserError(
            f"{where}: {names[0]} and {names[1]} need the same embedding width; "
            f"got {a.shape[1]} and {b.shape[1]}"
        )


def unpack(y_pred, keys, where):
    """The entries `keys` of a dict, or of a list/tuple in that order."""
    if isinstance(y_pred, dict):
        missing = [k for k in keys if k not in y_pred]
        if missing:
            raise UserError(
                f"{where}: y_pred needs the keys {list(keys)}; missing {missing}, got {sorted(y_pred)}"
            )
        return [y_pred[k] for k in keys]
    if isinstance(y_pred, (list, tuple)) and len(y_pred) == len(keys):
        return list(y_pred)
    raise UserError(
        f"{where}: y_pred must be a dict with keys {list(keys)} or a sequence of "
        f"{len(keys)} tensors in that order; got {type(y_pred).__name__}"
    )


def diagonal_mask(rows, cols):
    """`[rows, cols]` boolean, true where row index == column index."""
    return ops.arange(rows)[:, None] == ops.arange(cols)[None, :]


def contrastive_terms(logits, positives, negatives, extra_positives=None, log_beta=None):
    """Per-row `-log(e^p + β Σ_P e^l) + log(e^p + Σ_N e^l)`, precise for tiny losses.

    Written as `softplus(lse_N(l - p)) - softplus(log β + lse_P(l - p))`: the
    shift by the positive logit keeps the small differences that a float32
    `logsumexp(...) - p` would round away when the loss is ~1e-5.

    Args:
        logits: `[B, N]` logits (masked entries may hold anything finite).
        positives: `[B]` the positive logit of each row.
        negatives: `[B, N]` boolean, entries in the denominator besides the positive.
        extra_positives: optional `[B, N]` boolean, entries added to the numerator.
        log_beta: log of the weight of the extra positives.

    Returns:
        `[B]` losses.
    """
    shifted = logits - positives[:, None]
    neg = ops.logsumexp(ops.where(negatives, shifted, NEG), axis=1)
    loss = ops.softplus(neg)
    if extra_positives is not None:
        pos = ops.logsumexp(ops.where(extra_positives, shifted, NEG), axis=1)
        loss = loss - ops.softplus(pos + log_beta)
    return loss
