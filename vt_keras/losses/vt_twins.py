"""VT-TWINS: contrastive video–text loss over weakly aligned soft-DTW (S2DTW).

Ko et al., "Video-Text Representation Learning via Differentiable Weak
Temporal Alignment", CVPR 2022. For a video of `n` clip embeddings and a
caption sequence of `m` sentence embeddings (rows L2-normalised):

1. `C[i, j] = −⟨v_i, t_j⟩`, the shifted cosine distance in [−1, 1];
2. local neighbourhood smoothing, `C̃[i, j] = C[i, j] + softmin_γ(C[i, j − 1],
   C[i − 1, j], C[i − 1, j − 1])`, missing neighbours +∞ and all three taken as
   0 at (0, 0);
3. weak alignment: `W` of shape `(2n + 1, 2m + 1)` filled with θ and
   `W[1::2, 1::2] = C̃`, so every path may step around a pair costlier than θ;
4. `S2DTW = soft_dtw_γ(W)`, and InfoNCE over `S[p, q] = S2DTW(video q, text p)`
   for every pair of the global batch, text anchors, positive in the
   denominator.

This follows the authors' released code, which differs from the paper's Eq.
12 in having no temperature; `temperature=1.0` reproduces the code exactly.
`length_normalize=True` (ours, in neither) divides each pair's S2DTW by
`n + m`, its clips plus captions, so that scores are on the scale of one
cosine and comparable between videos of different lengths.
"""
import keras

from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.soft_dtw import soft_dtw
from vt_keras.losses.temporal_augment import next_seed, temporal_augment  # noqa: F401  (temporal_augment: public here too)
from vt_keras.ops import l2_normalize


def _checked(video, text, video_mask, text_mask):
    video = keras.ops.convert_to_tensor(video)
    text = keras.ops.convert_to_tensor(text)
    if len(video.shape) != 3 or len(text.shape) != 3:
        raise UserError(f"vt_twins_loss: video and text must be [B, n, d] and [B, m, d], found {video.shape} and {text.shape}.")
    if video.shape[0] != text.shape[0] or video.shape[2] != text.shape[2]:
        raise UserError(
            f"vt_twins_loss: video {video.shape} and text {text.shape} must share the batch size and the embedding size."
        )
    masks = []
    for name, x, mask in (("video_mask", video, video_mask), ("text_mask", text, text_mask)):
        if mask is None:
            mask = keras.ops.ones(keras.ops.shape(x)[:2], dtype="bool")
        else:
            mask = keras.ops.convert_to_tensor(mask)
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise UserError(f"vt_twins_loss: {name} must have shape {tuple(x.shape[:2])}, found {tuple(mask.shape)}.")
            mask = keras.ops.cast(mask, "bool")
        masks.append(mask)
    dtype = "float64" if video.dtype == "float64" else "float32"
    return keras.ops.cast(video, dtype), keras.ops.cast(text, dtype), masks[0], masks[1]


def _compact(x, mask):
    """Moves the valid rows of each sequence to the front (in order), zeroes the rest."""
    steps = keras.ops.shape(x)[1]
    # Distinct keys: valid rows sort first and keep their order.
    key = keras.ops.where(mask, 0, steps) + keras.ops.arange(steps)[None, :]
    order = keras.ops.argsort(key, axis=1)
    x = keras.ops.take_along_axis(x, order[:, :, None], axis=1)
    valid = keras.ops.arange(steps)[None, :] < keras.ops.sum(keras.ops.cast(mask, "int32"), axis=1)[:, None]
    return keras.ops.where(valid[:, :, None], x, keras.ops.zeros_like(x))


def _shift(x, axis, fill):
    """`out[..., i, ...] = x[..., i − 1, ...]` along `axis` (1 or 2), `fill` at 0."""
    pad = [[0, 0]] * 3
    pad[axis] = [1, 0]
    padded = keras.ops.pad(x, pad, constant_values=fill)
    return padded[:, :-1] if axis == 1 else padded[:, :, :-1]


def local_neighborhood_smoothing(cost, gamma):
    """`C̃ = C + softmin_γ(left, up, diagonal)` with the released code's borders.

    Call: `local_neighborhood_smoothing(cost [P, n, m], gamma) → [P, n, m]`.
    Missing neighbours are +∞, except at (0, 0), where all three are 0, so
    `C̃[0, 0] = C[0, 0] − γ log 3`.
    """
    inf = float("inf")
    left = _shift(cost, 2, inf)
    up = _shift(cost, 1, inf)
    diag = _shift(_shift(cost, 2, inf), 1, inf)
    _, n, m = keras.ops.shape(cost)
    corner = (keras.ops.arange(n)[:, None] == 0) & (keras.ops.arange(m)[None, :] == 0)
    corner = corner[None]
    left, up, diag = (keras.ops.where(corner, keras.ops.zeros_like(x), x) for x in (left, up, diag))
    low = keras.ops.stop_gradient(keras.ops.minimum(keras.ops.minimum(left, up), diag))
    total = sum(keras.ops.exp((low - x) / gamma) for x in (left, up, diag))
    return cost + low - gamma * keras.ops.log(total)


def weak_alignment_matrix(smoothed, theta):
    """Interleaves θ with the smoothed costs: `[P, n, m]` → `[P, 2n + 1, 2m + 1]`.

    `W[2i + 1, 2j + 1] = C̃[i, j]`; every other cell is θ.
    """
    pairs, n, m = keras.ops.shape(smoothed)
    fill = keras.ops.full_like(smoothed, theta)
    rows = keras.ops.reshape(keras.ops.stack([fill, smoothed], axis=-1), (pairs, n, 2 * m))
    rows = keras.ops.pad(rows, [[0, 0], [0, 0], [0, 1]], constant_values=theta)
    grid = keras.ops.stack([keras.ops.full_like(rows, theta), rows], axis=2)
    grid = keras.ops.reshape(grid, (pairs, 2 * n, 2 * m + 1))
    return keras.ops.pad(grid, [[0, 0], [0, 1], [0, 0]], constant_values=theta)


def s2dtw_matrix(video, text, video_lengths, text_lengths, gamma=0.1, theta=0.5):
    """`S[p, q] = S2DTW(video q, text p)` for every pair, in one soft-DTW call.

    Call: `s2dtw_matrix(video [G, n, d], text [G, m, d], video_lengths [G],
    text_lengths [G]) → [G, G]`. Rows must be L2-normalised, with each
    sequence's valid rows first.
    """
    g, n, _ = keras.ops.shape(video)
    m = keras.ops.shape(text)[1]
    cost = -keras.ops.einsum("qid,pjd->pqij", video, text)
    cost = keras.ops.reshape(cost, (-1, n, m))
    weak = weak_alignment_matrix(local_neighborhood_smoothing(cost, gamma), theta)
    rows = keras.ops.tile(2 * video_lengths + 1, [g])
    cols = keras.ops.repeat(2 * text_lengths + 1, g)
    values = soft_dtw(weak, gamma, row_lengths=rows, col_lengths=cols)
    return keras.ops.reshape(values, (g, g))


def vt_twins_loss(
    video,
    text,
    video_mask=None,
    text_mask=None,
    gamma=0.1,
    theta=0.5,
    temperature=0.02,
    symmetric=False,
    gather=None,
    augment=False,
    seed=None,
    length_normalize=False,
):
    """VT-TWINS contrastive loss over S2DTW of every video–text pair.

    Call: `vt_twins_loss(video [B, n, d], text [B, m, d]) → scalar` (float32,
    float64 for float64 inputs).

    Args:
        video: per-clip embeddings; rows are L2-normalised here.
        text: per-caption embeddings, caption `j` of a video with clip `j`.
        video_mask: optional `[B, n]` bool, True for real clips. Padded clips
            (anywhere in the sequence) change nothing: each pair's weak
            alignment matrix is `(2n_q + 1) × (2m_p + 1)` of its valid part.
        text_mask: optional `[B, m]` bool, True for real captions.
        gamma: soft-min temperature of both the smoothing and the soft-DTW.
        theta: cost of the interleaved weak-alignment cells.
        temperature: τ dividing S in the InfoNCE logits (paper: 0.02, the
            released code: 1.0).
        symmetric: also use video anchors (`logsumexp` over texts) and
            average the two directions; the released code has text anchors
            only.
        gather: `gather(x, axis=0)` giving the global batch (e.g.
            `vt_keras.distributed.replica_gather`); identity if None. The
            result is the global loss on every replica.
        augment: the released code's temporal data augmentation (off there
            and here by default), applied to this replica's examples before
            the gather; see `temporal_augment`.
        seed: seed for `augment`: an int, a `keras.random.SeedGenerator` or
            a stateless seed tensor `[2]` (see `temporal_augment`).
        length_normalize: divide `S[p, q]` by `n_q + m_p`, the valid clips
            of video q plus the valid captions of text p (neither the paper
            nor the code does). Unnormalised, S grows with the sequences'
            lengths: for n = m = 8 and 128-d unit vectors, about −14 for a
            well-aligned pair (cosine 0.96 per clip) against +3 for
            unrelated ones (n = 4: −6 and +2), so τ = 0.02 puts logits
            hundreds apart and a score depends on the lengths as much as on
            the match. Normalised, the
            same pairs score −0.85 and +0.2, a cosine-like scale; with the
            paper's fixed n = m = 8 it is the unnormalised loss at `τ · 16`.

    Returns:
        `mean_p [logsumexp_q(−S[p, q]/τ) + S[p, p]/τ]`, S normalised if asked.

    Example:
        >>> loss = vt_twins_loss(clip_emb, caption_emb, temperature=1.0)

    Implements Ko et al. (2022), "Video-Text Representation Learning via
    Differentiable Weak Temporal Alignment" (S2DTW), as released.
    """
    if not gamma > 0 or not temperature > 0:
        raise ConfigError(f"vt_twins_loss: gamma and temperature must be > 0, found {gamma} and {temperature}.")
    video, text, video_mask, text_mask = _checked(video, text, video_mask, text_mask)
    # Zero padding before normalising: NaN or huge padding must not reach
    # the values or the gradients.
    video = _compact(l2_normalize(keras.ops.where(video_mask[:, :, None], video, 0.0)), video_mask)
    text = _compact(l2_normalize(keras.ops.where(text_mask[:, :, None], text, 0.0)), text_mask)
    video_lengths = keras.ops.sum(keras.ops.cast(video_mask, "int32"), axis=1)
    text_lengths = keras.ops.sum(keras.ops.cast(text_mask, "int32"), axis=1)
    if augment:
        video = temporal_augment(video, video_lengths, seed=seed)
        # A different draw for the captions: the code samples them independently.
        text = temporal_augment(text, text_lengths, seed=None if seed is None else next_seed(seed))
    if gather is not None:
        # All-gather loses the static sequence sizes that the kernel's trace needs.
        video = keras.ops.reshape(gather(video, axis=0), (-1,) + tuple(video.shape[1:]))
        text = keras.ops.reshape(gather(text, axis=0), (-1,) + tuple(text.shape[1:]))
        video_lengths, text_lengths = gather(video_lengths, axis=0), gather(text_lengths, axis=0)
    scores = s2dtw_matrix(video, text, video_lengths, text_lengths, gamma, theta)
    if length_normalize:
        sizes = text_lengths[:, None] + video_lengths[None, :]
        # max(·, 1): a pair of two empty sequences scores θ alone, left as it is.
        scores = scores / keras.ops.cast(keras.ops.maximum(sizes, 1), scores.dtype)
    logits = -scores / temperature
    positives = keras.ops.diagonal(logits)
    loss = keras.ops.mean(keras.ops.logsumexp(logits, axis=1) - positives)
    if symmetric:
        loss = 0.5 * (loss + keras.ops.mean(keras.ops.logsumexp(logits, axis=0) - positives))
    return loss


@keras.saving.register_keras_serializable(package="vt_keras")
class VTTwinsLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `vt_twins_loss` for `compile()` users.

    Call: `loss(y_true, y_pred) → scalar`. A model has one output per loss,
    so `y_pred` `[B, n + m, d]` holds the `n = num_clips` clip embeddings
    followed by the `m` caption embeddings (`keras.ops.concatenate([video,
    text], axis=1)`). `y_true` is either the matching validity mask
    `[B, n + m]` (1 for real clips and captions) or a dummy of shape `[B]`
    or `[B, 1]` when nothing is padded; the pairing itself is the batch order.

    Args:
        num_clips: `n`, how many rows of `y_pred` are clips.
        gamma, theta, temperature, symmetric, augment, length_normalize: as
            in `vt_twins_loss`.
        gather: optional `gather(x, axis=0)` for the global batch; a function,
            so not part of the config: pass it again after loading.

    Example:
        >>> model.compile(optimizer="adam", loss=VTTwinsLoss(num_clips=8, temperature=1.0))

    Implements Ko et al. (2022), S2DTW as released.
    """

    def __init__(
        self,
        num_clips,
        gamma=0.1,
        theta=0.5,
        temperature=0.02,
        symmetric=False,
        augment=False,
        gather=None,
        length_normalize=False,
        name="vt_twins_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if int(num_clips) != num_clips or num_clips < 1:
            raise ConfigError(f"VTTwinsLoss: num_clips must be a positive integer, found {num_clips}.")
        self.num_clips = int(num_clips)
        self.gamma = gamma
        self.theta = theta
        self.temperature = temperature
        self.symmetric = symmetric
        self.augment = augment
        self.length_normalize = length_normalize
        self.gather = gather
        self._seed = keras.random.SeedGenerator(0) if augment else None

    def call(self, y_true, y_pred):
        n = self.num_clips
        if len(y_pred.shape) != 3 or y_pred.shape[1] is not None and y_pred.shape[1] <= n:
            raise UserError(
                f"VTTwinsLoss: y_pred must be [B, num_clips + m, d] with num_clips = {n} and m >= 1, found {y_pred.shape}."
            )
        video_mask = text_mask = None
        if len(y_true.shape) == 2 and y_true.shape[1] not in (None, 1):
            if y_true.shape[1] != y_pred.shape[1]:
                raise UserError(f"VTTwinsLoss: y_true must be a [B, {y_pred.shape[1]}] mask or a dummy, found {y_true.shape}.")
            mask = keras.ops.cast(y_true, "float32") > 0.5
            video_mask, text_mask = mask[:, :n], mask[:, n:]
        return vt_twins_loss(
            y_pred[:, :n],
            y_pred[:, n:],
            video_mask=video_mask,
            text_mask=text_mask,
            gamma=self.gamma,
            theta=self.theta,
            temperature=self.temperature,
            symmetric=self.symmetric,
            gather=self.gather,
            augment=self.augment,
            seed=self._seed,
            length_normalize=self.length_normalize,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_clips=self.num_clips,
            gamma=self.gamma,
            theta=self.theta,
            temperature=self.temperature,
            symmetric=self.symmetric,
            augment=self.augment,
            length_normalize=self.length_normalize,
        )
        return config
