"""How well clip–caption alignments (VT-TWINS, S2DTW) find the truth, and retrieval ranked by S2DTW.

Analysis of a trained video–text model's per-clip and per-caption
embeddings, as `bin/plot_alignment` reports them:

- `pair_alignments`: the cost matrix, the S2DTW value and the expected weak
  alignment of row-paired clip and caption sequences;
- `s2dtw_retrieval_metrics`: text→video and video→text R@K, MedR, MnR with
  every pair scored by S2DTW instead of pooled dot products;
- `planted_alignment_scores`: on synthetic records with planted ground truth,
  whether the similarities and alignments find the right clip for each
  caption and avoid the irrelevant captions.

The embeddings come as the dict of `RetrievalTask.embed_sequences` (valid
rows first, zero padding): `ids`, `caption_index`, `video [V, N, E]`,
`text [V, M, E]`, `video_lengths`, `text_lengths [V]`.

Reference: Ko et al., "Video-Text Representation Learning via Differentiable
Weak Temporal Alignment", CVPR 2022 (S2DTW, its Figure 2 and supplement).
"""
import keras
import numpy as np

from vt_keras.losses.soft_dtw import soft_dtw, soft_dtw_alignment
from vt_keras.losses.vt_twins import local_neighborhood_smoothing, s2dtw_matrix, weak_alignment_matrix
from vt_keras.metrics.retrieval import mean_rank, median_rank, recall_at_k
from vt_keras.ops import l2_normalize

# The paper's S2DTW settings, for models trained with another loss (a VT-TWINS
# model is analysed with its own `loss.vt_twins` values).
PAPER_ALIGNMENT = {"gamma": 0.1, "theta": 0.5}


def pair_alignments(video, text, video_lengths, text_lengths, gamma=PAPER_ALIGNMENT["gamma"],
                    theta=PAPER_ALIGNMENT["theta"]):
    """Cost, S2DTW value and expected weak alignment of row-paired clip and caption sequences.

    Call: `pair_alignments(video [P, n, E], text [P, m, E], video_lengths [P],
    text_lengths [P]) → (cost [P, n, m], s2dtw [P], alignment [P, 2n + 1, 2m + 1])`
    as numpy arrays, for sequences with their valid rows first. `cost` is the
    shifted cosine distance `−⟨v_i, t_j⟩` of normalised rows; `alignment` is
    `∂ S2DTW / ∂ W` on the weak-alignment matrix, so cell `(2i + 1, 2j + 1)`
    is the expected use of the pair (clip i, caption j) and the others the
    expected use of the θ cells that let a path skip clips or captions.

    Args:
        video, text: the sequences of each pair.
        video_lengths, text_lengths: their valid rows.
        gamma: soft-min smoothing of the neighbourhood smoothing and soft-DTW.
        theta: cost of the interleaved weak-alignment cells.

    Example:
    >>> cost, value, alignment = pair_alignments(video[[0]], text[[0]], [5], [5])
    """
    cost = -keras.ops.einsum("pid,pjd->pij", l2_normalize(keras.ops.cast(video, "float32")),
                             l2_normalize(keras.ops.cast(text, "float32")))
    weak = weak_alignment_matrix(local_neighborhood_smoothing(cost, gamma), theta)
    rows = 2 * keras.ops.cast(video_lengths, "int32") + 1
    cols = 2 * keras.ops.cast(text_lengths, "int32") + 1
    value = soft_dtw(weak, gamma, row_lengths=rows, col_lengths=cols)
    alignment = soft_dtw_alignment(weak, gamma, row_lengths=rows, col_lengths=cols)
    return np.asarray(cost), np.asarray(value), np.asarray(alignment)


def s2dtw_retrieval_metrics(embedded, gamma=PAPER_ALIGNMENT["gamma"], theta=PAPER_ALIGNMENT["theta"]):
    """Text→video and video→text R@1/5/10 (percent), MedR, MnR ranked by S2DTW instead of pooled dot products.

    Scores every (caption sequence, video) pair of `embedded` (the dict of
    `RetrievalTask.embed_sequences`) with `s2dtw_matrix`; lower S2DTW ranks
    higher.

    Returns:
        `{"s2dtw_t2v/R@1": ..., "s2dtw_v2t/MnR": ...}` floats.

    Example:
    >>> s2dtw_retrieval_metrics(task.embed_sequences(model, "data/validate-*"))["s2dtw_t2v/R@1"]
    """
    scores = np.asarray(s2dtw_matrix(embedded["video"], embedded["text"], embedded["video_lengths"],
                                     embedded["text_lengths"], gamma, theta), np.float64)
    out = {}
    for prefix, similarity in (("s2dtw_t2v", -scores), ("s2dtw_v2t", -scores.T)):
        for k in (1, 5, 10):
            out[f"{prefix}/R@{k}"] = 100.0 * recall_at_k(similarity, k)
        out[f"{prefix}/MedR"] = median_rank(similarity)
        out[f"{prefix}/MnR"] = mean_rank(similarity)
    return out


def planted_alignment_scores(embedded, truth, gamma=PAPER_ALIGNMENT["gamma"], theta=PAPER_ALIGNMENT["theta"]):
    """How well a model's clip–caption similarities and S2DTW alignments find the planted truth.

    For every video of `embedded` (the dict of `RetrievalTask.embed_sequences`)
    with ground truth in `truth` (`{video id: {"clip_step", "caption_step",
    "caption_kind": int arrays}}`, as `read_planted_alignment` returns it;
    caption kinds 0 aligned, 1 shuffled with a neighbour, 2 irrelevant), on
    its own captions:

    - `caption_to_clip_accuracy`: for captions of a step the video shows
      (kinds 0 and 1), how often the most similar clip is that step's clip
      (chance: about 1/n);
    - `irrelevant_auc`: AUC of separating relevant from irrelevant captions
      by their best clip similarity (0.5: chance);
    - `alignment_on_truth`: of the expected S2DTW alignment mass on real
      (clip, caption) cells, the fraction on cells whose caption describes
      that clip;
    - `irrelevant_caption_mass`, `relevant_caption_mass`: the mean expected
      alignment mass of an irrelevant / a relevant caption's column (a
      caption skipped through θ cells gets little).

    Returns:
        A dict of floats plus `num_videos` (0 when no video has ground truth).

    Example:
    >>> planted_alignment_scores(embedded, read_planted_alignment(pattern))["irrelevant_auc"]
    """
    rows = [i for i, vid in enumerate(embedded["ids"]) if vid in truth]
    if not rows:
        return {"num_videos": 0}
    vlen, tlen = embedded["video_lengths"][rows], embedded["text_lengths"][rows]
    cost, _, align = pair_alignments(embedded["video"][rows], embedded["text"][rows], vlen, tlen, gamma, theta)
    hits, auc_pos, auc_neg, on_truth, real_mass, masses = [], [], [], 0.0, 0.0, {0: [], 2: []}
    for b, row in enumerate(rows):
        t = truth[embedded["ids"][row]]
        n, m = int(vlen[b]), int(tlen[b])
        index = embedded["caption_index"][row]
        clip_step, caption_step, kind = t["clip_step"][:n], t["caption_step"][index], t["caption_kind"][index]
        sim = -cost[b, :n, :m]
        match = clip_step[:, None] == caption_step[None, :]
        mass = align[b, 1:2 * n:2, 1:2 * m:2]
        on_truth += float(mass[match].sum())
        real_mass += float(mass.sum())
        for j in range(m):
            relevant = kind[j] != 2
            (auc_pos if relevant else auc_neg).append(sim[:, j].max())
            masses[0 if relevant else 2].append(float(mass[:, j].sum()))
            if relevant and match[:, j].any():
                hits.append(bool(match[np.argmax(sim[:, j]), j]))
    pos, neg = np.asarray(auc_pos)[:, None], np.asarray(auc_neg)[None, :]
    auc = float(np.mean((pos > neg) + 0.5 * (pos == neg))) if neg.size else float("nan")
    return {"num_videos": len(rows), "caption_to_clip_accuracy": float(np.mean(hits)) if hits else float("nan"),
            "irrelevant_auc": auc, "alignment_on_truth": on_truth / max(real_mass, 1e-12),
            "relevant_caption_mass": float(np.mean(masses[0])) if masses[0] else float("nan"),
            "irrelevant_caption_mass": float(np.mean(masses[2])) if masses[2] else float("nan")}
