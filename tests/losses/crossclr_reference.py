"""A float64 loop implementation of CrossCLR, written from the equations.

Independent of `vt_keras.losses.crossclr`: no vectorisation, no shared helpers.
`queue` rows join the negatives and the proximity but are never anchors.
"""
import numpy as np


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_crossclr(video_emb, text_emb, video_feat, text_feat, temperature, weight_temperature,
                       intra_weight, prune_threshold, compat, num_positives=0, positive_weight=0.0,
                       queue=None):
    video_emb, text_emb = _unit(np.asarray(video_emb, float)), _unit(np.asarray(text_emb, float))
    video_feat, text_feat = np.asarray(video_feat, float), np.asarray(text_feat, float)
    batch = len(video_emb)
    if queue is not None:
        video_emb_pool = np.concatenate([video_emb, _unit(queue[0])])
        text_emb_pool = np.concatenate([text_emb, _unit(queue[1])])
        video_feat = np.concatenate([video_feat, queue[2]])
        text_feat = np.concatenate([text_feat, queue[3]])
    else:
        video_emb_pool, text_emb_pool = video_emb, text_emb
    args = (temperature, weight_temperature, intra_weight, prune_threshold, compat,
            num_positives, positive_weight, batch)
    video_loss = _direction(video_emb_pool, text_emb_pool, video_feat, *args)
    text_loss = _direction(text_emb_pool, video_emb_pool, text_feat, *args)
    return (video_loss + text_loss) / 2


def influence(features, prune_threshold, compat):
    """Centralities c_i = Σ_{j≠i} ⟨x_i, x_j⟩ and the influential flags."""
    n = len(features)
    c = np.array([sum(features[i] @ features[j] for j in range(n) if j != i) for i in range(n)])
    if c.max() <= 0:
        return c, np.zeros(n, bool)
    scores = c / c.max()
    return c, (scores >= prune_threshold) if compat else (scores > prune_threshold)


def _direction(same, other, features, tau, kappa, lam, gamma, compat, k_pos, beta, batch):
    n = len(same)
    c, infl = influence(features, gamma, compat)
    losses = []
    for i in range(batch):
        positive = np.exp(same[i] @ other[i] / tau)
        numerator, denominator = positive, positive
        for j in range(n):
            if j == i:
                continue
            s = same[i] @ other[j] / tau
            if compat:
                denominator += np.exp(0.0) if infl[j] else np.exp(s)
            elif not infl[j]:
                denominator += np.exp(s)
        for k in range(n):
            s = same[i] @ same[k] / tau
            if compat:
                if not infl[k]:
                    denominator += np.exp(0.0) if k == i else np.exp(lam * s)
            elif k != i and not infl[k]:
                denominator += lam * np.exp(s)
        if k_pos:
            candidates = [j for j in range(n) if j != i and infl[j]]
            candidates.sort(key=lambda j: -(features[i] @ features[j]))
            for j in candidates[:k_pos]:
                numerator += beta * np.exp(same[i] @ other[j] / tau)
        losses.append(-np.log(numerator / denominator))
    anchor_c = c[:batch]
    w = anchor_c / anchor_c.sum() / kappa
    w = np.exp(w - w.max())
    return float(np.sum(w * np.array(losses)) / np.sum(w))
