"""CrossCLR: cross-modal contrastive loss with proximity-aware negatives.

Zolfaghari et al., "CrossCLR: Cross-modal Contrastive Learning For
Multi-modal Video Representations", ICCV 2021. On top of the symmetric
InfoNCE of video–text pairs, CrossCLR

- adds intra-modality negatives (video i vs video k), weighted by λ;
- measures the *proximity* (centrality) of each sample from the raw input
  features of its modality, `c_i = Σ_{j≠i} ⟨x_i, x_j⟩`, and prunes the
  *influential* samples (`c_j / max c > γ`) from the negatives, because they
  share semantics with many others;
- weights each anchor's loss by `softmax_i((c_i / Σ_j c_j) / κ)`.

Each direction (video anchors, text anchors) uses its own modality's
proximity, logits and intra negatives; the loss is their mean.

`reference_compat=True` reproduces the released code instead of the paper's
equation: λ multiplies the logit (`exp(λ·s)`), pruned cross-modal entries stay
in the denominator as logits of 0, and the intra negatives are the columns of
non-influential samples of `λ·s·(1 - I)`, so a non-influential anchor also
keeps its own intra entry as a logit of 0 (the supplement's pseudocode
selects columns of `l_vv·mask`). Influential there means `ĉ ≥ γ` (kept:
`ĉ < γ`); the paper's mode prunes `ĉ > γ`, so `γ = 1` prunes nothing. This
reading reproduces the released code's worked values (tests/losses/test_crossclr.py)
to all their digits. Those values fix the denominators of influential anchors,
which carry almost all the weight at κ = 0.0035; readings that differ only
for non-influential anchors agree with them to ~1e-11.

The queue variant lives in `CrossCLRLoss` (`crossclr_queue.py`).
"""
import math

from keras import ops

from vt_keras.errors import ConfigError
from vt_keras.losses.contrastive import as_float, check_pair, contrastive_terms, diagonal_mask
from vt_keras.ops import identity_gather, l2_normalize

# Hyper-parameters of the supplement's Table 1 and Section 3.1; `queue_size`
# applies to the local (clip/sentence) loss only, the global loss has none.
# This is the one source of CrossCLR's defaults: configs and tasks read it.
PRESETS = {
    "youcook2": dict(temperature=0.03, weight_temperature=35e-4, intra_weight=0.8,
                     prune_threshold=0.9, queue_size=5000),
    "lsmdc": dict(temperature=0.03, weight_temperature=55e-4, intra_weight=0.65,
                  prune_threshold=0.9, queue_size=3000),
    "youcook2_multi_positive": dict(num_positives=2, positive_weight=0.15),
    "lsmdc_multi_positive": dict(num_positives=5, positive_weight=0.2),
}

# The options of `crossclr_loss` and `CrossCLRLoss` when not given: YouCook2's
# loss hyper-parameters, the paper's equation, no extra positives, no queue.
DEFAULTS = dict(
    {k: v for k, v in PRESETS["youcook2"].items() if k != "queue_size"},
    reference_compat=False, num_positives=0, positive_weight=0.0,
)


def crossclr_loss(video_emb, text_emb, video_features, text_features,
                  temperature=DEFAULTS["temperature"],
                  weight_temperature=DEFAULTS["weight_temperature"],
                  intra_weight=DEFAULTS["intra_weight"],
                  prune_threshold=DEFAULTS["prune_threshold"],
                  reference_compat=DEFAULTS["reference_compat"], gather=None,
                  num_positives=DEFAULTS["num_positives"],
                  positive_weight=DEFAULTS["positive_weight"]):
    """CrossCLR loss of a batch of paired embeddings (no queue).

    Per video anchor i, with `s(a, b) = ⟨â, b̂⟩ / τ` and N the non-influential
    samples (by video proximity):
    `ℓ_i = -s(v_i, t_i) + log(e^{s(v_i,t_i)} + Σ_{j∈N, j≠i} e^{s(v_i,t_j)}
    + λ Σ_{k∈N, k≠i} e^{s(v_i,v_k)})`, and `L_v = Σ_i w_i ℓ_i` with
    `w = softmax((c / Σ c) / κ)`; text anchors alike; `L = (L_v + L_t) / 2`.
    With `num_positives = K > 0`, the K influential samples most similar to
    the anchor in raw features join the numerator as `β e^{s(v_i, t_k)}`
    (the supplement's Eq. 1–2; they are not in the denominator, so the loss
    may be negative).

    Edge cases: when the largest centrality is ≤ 0 nothing is influential;
    when `Σ c ≤ 0` the weights normalise by `Σ |c|` instead (uniform if all
    are 0). Proximities and weights carry no gradient.

    The option defaults are `DEFAULTS` (YouCook2's values of the supplement).

    Args:
        video_emb: `[B, d]` video embeddings (L2-normalised inside).
        text_emb: `[B, d]` text embeddings paired row by row.
        video_features: `[B, F_v]` raw video input features (proximity only).
        text_features: `[B, F_t]` raw text input features.
        temperature: τ of the logits.
        weight_temperature: κ of the anchor weights (stable as a softmax).
        intra_weight: λ ≥ 0 of the intra-modality negatives.
        prune_threshold: γ > 0; `γ ≥ 1` prunes nothing in the paper's mode.
        reference_compat: reproduce the released code (module docstring).
        gather: `gather(x, axis=0)` returning the global batch (e.g.
            `vt_keras.distributed.replica_gather`); `None` means identity.
        num_positives: K extra positives per anchor (0: off).
        positive_weight: β of the extra positives.

    Returns:
        A float32 scalar (float64 for float64 inputs).

    Raises:
        ConfigError: for an option out of range.
        UserError: for inputs whose shapes do not fit together.

    Example:
    >>> loss = crossclr_loss(v_emb, t_emb, v_feat, t_feat, temperature=0.03)
    """
    options = crossclr_options(temperature, weight_temperature, intra_weight, prune_threshold,
                               reference_compat, num_positives, positive_weight)
    inputs = check_inputs("crossclr_loss", video_emb, text_emb, video_features, text_features)
    gather = gather or identity_gather
    return crossclr_from_pool([gather(x) for x in inputs], None, options)


def crossclr_options(temperature, weight_temperature, intra_weight, prune_threshold,
                     reference_compat, num_positives, positive_weight, where="crossclr"):
    """Validates the options; returns them as a dict."""
    def positive(key, value, strict=True):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not (value > 0 if strict else value >= 0):
            raise ConfigError(f"{where}: {key} must be a number {'>' if strict else '≥'} 0; got {value!r}")

    positive("temperature", temperature)
    positive("weight_temperature", weight_temperature)
    positive("intra_weight", intra_weight, strict=False)
    positive("prune_threshold", prune_threshold)
    positive("positive_weight", positive_weight, strict=False)
    if not isinstance(num_positives, int) or isinstance(num_positives, bool) or num_positives < 0:
        raise ConfigError(f"{where}: num_positives must be an integer ≥ 0; got {num_positives!r}")
    return dict(temperature=float(temperature), weight_temperature=float(weight_temperature),
                intra_weight=float(intra_weight), prune_threshold=float(prune_threshold),
                reference_compat=bool(reference_compat), num_positives=num_positives,
                positive_weight=float(positive_weight))


def check_inputs(where, video_emb, text_emb, video_features, text_features):
    """Casts the four inputs to float and checks that their shapes fit."""
    inputs = as_float(video_emb, text_emb, video_features, text_features)
    check_pair(where, inputs[0], inputs[1], ("video_emb", "text_emb"), same_width=True)
    check_pair(where, inputs[0], inputs[2], ("video_emb", "video_features"), same_width=False)
    check_pair(where, inputs[1], inputs[3], ("text_emb", "text_features"), same_width=False)
    return inputs


def crossclr_from_pool(batch, memory, options):
    """The loss of the (global) batch against itself and an optional memory.

    Args:
        batch: `[video_emb, text_emb, video_features, text_features]`, B rows.
        memory: `None` or the same four tensors for Q past samples plus a
            `[Q]` boolean of the filled slots. Memory rows are extra negatives
            and count in every sample's proximity; they are never anchors.
        options: the dict of `crossclr_options`.
    """
    video_emb, text_emb = l2_normalize(batch[0]), l2_normalize(batch[1])
    video_feat, text_feat = ops.stop_gradient(batch[2]), ops.stop_gradient(batch[3])
    valid = ops.ones_like(video_emb[:, 0]) > 0
    pool = [video_emb, text_emb, video_feat, text_feat]
    if memory is not None:
        stored = [ops.cast(ops.stop_gradient(m), video_emb.dtype) for m in memory[:4]]
        stored[:2] = [l2_normalize(m) for m in stored[:2]]
        pool = [ops.concatenate([p, m], axis=0) for p, m in zip(pool, stored)]
        valid = ops.concatenate([valid, memory[4]], axis=0)
    video_loss = _direction(video_emb, pool[0], pool[1], pool[2], valid, options)
    text_loss = _direction(text_emb, pool[1], pool[0], pool[3], valid, options)
    return 0.5 * (video_loss + text_loss)


def _direction(anchors, same, other, pool_features, valid, o):
    """Weighted loss of the anchors of one modality (rows 0..B-1 of the pool)."""
    batch = ops.shape(anchors)[0]
    size = ops.shape(same)[0]
    features = ops.where(valid[:, None], pool_features, 0.0)
    # Σ_{j≠i} ⟨x_i, x_j⟩ = ⟨x_i, Σ_j x_j⟩ - ‖x_i‖²: O(N·F), no N×N gram.
    total = ops.sum(features, axis=0)
    centrality = ops.sum(features * total, axis=1) - ops.sum(ops.square(features), axis=1)
    largest = ops.max(ops.where(valid, centrality, ops.min(centrality)))
    cut = o["prune_threshold"] * largest
    if o["reference_compat"]:
        influential = ~(centrality < cut)
    else:
        influential = centrality > cut
    influential = influential & valid & (largest > 0)

    eye = diagonal_mask(batch, size)
    column_ok = valid[None, :]
    not_influential = ~influential[None, :]
    inter = ops.matmul(anchors, ops.transpose(other)) / o["temperature"]
    intra = ops.matmul(anchors, ops.transpose(same)) / o["temperature"]
    positives = ops.diagonal(inter)
    lam = o["intra_weight"]
    blocks = [inter]
    if o["reference_compat"]:
        blocks[0] = ops.where(influential[None, :] & ~eye, 0.0, inter)
        intra = ops.where(eye, 0.0, lam * intra)
        inter_neg = column_ok & ~eye
        intra_neg = ops.broadcast_to(column_ok & not_influential, ops.shape(eye))
    else:
        inter_neg = column_ok & ~eye & not_influential
        if lam > 0:
            intra = intra + math.log(lam)  # λ·e^s = e^{s + log λ}
            intra_neg = inter_neg
        else:
            intra_neg = ops.zeros_like(inter_neg)
    blocks.append(intra)
    masks = [inter_neg, intra_neg]

    extra, log_beta = None, None
    if o["num_positives"] > 0 and o["positive_weight"] > 0:
        # Extra positives are influential samples, whose logits the released
        # code zeroes in the denominator block: give them a block of their own.
        candidates = column_ok & ~eye & influential[None, :]
        chosen = _top_influential(features, batch, candidates, o["num_positives"])
        blocks.append(inter)
        masks.append(ops.zeros_like(chosen))
        extra = ops.concatenate([ops.zeros_like(chosen), ops.zeros_like(chosen), chosen], axis=1)
        log_beta = math.log(o["positive_weight"])
    logits = ops.concatenate(blocks, axis=1)
    negatives = ops.concatenate(masks, axis=1)
    losses = contrastive_terms(logits, positives, negatives, extra, log_beta)

    anchor_centrality = centrality[:batch]
    total_c = ops.sum(anchor_centrality)
    total_abs = ops.sum(ops.abs(anchor_centrality))
    scale = ops.where(total_c > 1e-6 * total_abs, total_c, ops.where(total_abs > 0, total_abs, 1.0))
    weights = ops.softmax(anchor_centrality / scale / o["weight_temperature"])
    return ops.sum(ops.stop_gradient(weights) * losses)


def _top_influential(features, batch, candidates, k):
    """`[B, N]` boolean: per anchor, its k most similar candidates in raw features."""
    similarity = ops.matmul(features[:batch], ops.transpose(features))
    scores = ops.where(candidates, similarity, float("-inf"))
    # k padding columns that are never candidates keep top_k valid when N < k.
    scores = ops.pad(scores, [[0, 0], [0, k]], constant_values=float("-inf"))
    _, index = ops.top_k(scores, k=k)
    width = ops.shape(scores)[1]
    hits = ops.sum(ops.one_hot(index, width, dtype="int32"), axis=1) > 0
    return hits[:, : ops.shape(candidates)[1]] & candidates

