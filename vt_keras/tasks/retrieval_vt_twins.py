"""The VT-TWINS (S2DTW) loss on the retrieval task, and how well its alignments match planted truth.

`loss.name = "vt_twins"` trains the `DualEncoder` with `vt_twins_loss` (Ko et
al., CVPR 2022) on the *per-clip* and *per-caption* embeddings
(`video_sequence`, `text_sequence`) and their masks: every (caption sequence,
video) pair of the global batch is scored by S2DTW in one batched soft-DTW
call, and InfoNCE over those scores pulls each video towards its own captions.
Evaluation stays the task's: pooled embeddings and dot products, as the paper
evaluates zero-shot retrieval.

Keys of `config.loss` read here (configs/retrieval/vt_twins.py documents them):
`gamma`, `theta`, `temperature` (τ of the InfoNCE over S2DTW scores),
`symmetric`, `augment`, `augment_seed`, and `info_nce_weight` /
`info_nce_temperature` for an optional pooled symmetric InfoNCE term added to
the S2DTW loss (weight 0 by default: VT-TWINS alone).

`planted_alignment_scores` measures, on synthetic records that carry the
planted ground truth (`synthetic/clip_step`, `synthetic/caption_step`,
`synthetic/caption_kind`), whether a trained model's clip–caption
similarities and S2DTW alignments find the right clip for each caption and
avoid the irrelevant captions.

Example:

```python
config = get_config()  # configs/retrieval/vt_twins.py
RetrievalTask.prepare_config(config)
results, model = vt_keras.train.loop.train(config, "runs/vt_twins")
```
"""
import numpy as np
import tensorflow as tf

from vt_keras.errors import ConfigError, DataError
from vt_keras.tasks.retrieval import RETRIEVAL_LOSSES


def _step_seeds(step, salt):
    """A seed source for `temporal_augment`: stateless, from the step and the replica.

    Keras' random ops take an int or a `SeedGenerator`, whose state is a
    variable that a `MirroredStrategy` replica may not update. This one owns
    no variable: draw `k` is a pure function of (step, replica, salt, k), so
    replicas draw differently and a resumed run draws as the first run did.
    """
    import keras

    from vt_keras.distributed import replica_id

    base = tf.stack([tf.cast(0 if step is None else step, tf.int32), replica_id() * 1000003 + salt])

    class _StepSeeds(keras.random.SeedGenerator):
        def __init__(self):  # no state variable: see above
            self.draws = 0

        def next(self, ordered=True):
            del ordered
            self.draws += 1
            return base + tf.constant([0, 7919], tf.int32) * self.draws

    return _StepSeeds()


def _options(loss_config):
    lc = loss_config
    opts = {
        "gamma": float(lc.get("gamma", 0.1)),
        "theta": float(lc.get("theta", 0.5)),
        "temperature": float(lc.get("temperature", 0.02)),
        "symmetric": bool(lc.get("symmetric", False)),
        "augment": bool(lc.get("augment", False)),
    }
    for key, name in (("gamma", "loss.gamma"), ("temperature", "loss.temperature")):
        if not opts[key] > 0:
            raise ConfigError(f"{name}={opts[key]}: expected a value > 0")
    weight = float(lc.get("info_nce_weight", 0.0))
    if weight < 0:
        raise ConfigError(f"loss.info_nce_weight={weight}: expected >= 0 (0 turns the pooled InfoNCE term off)")
    return opts, weight


@RETRIEVAL_LOSSES.register("vt_twins")
def vt_twins_retrieval_loss(outputs, batch, ctx, loss_config):
    """VT-TWINS S2DTW contrastive loss of the clip and caption sequences, global batch.

    Call: `vt_twins_retrieval_loss(outputs, batch, ctx, loss_config) → scalar`,
    with `outputs` the `DualEncoder`'s dict (`video_sequence [B, N, E]`,
    `video_mask [B, N]`, `text_sequence [B, M, E]`, `text_mask [B, M]`,
    pooled `video`, `text` `[B, E]`).

    Returns `vt_twins_loss(...) + info_nce_weight · info_nce(video, text)`,
    both over the batch gathered with `ctx.gather`.

    Implements Ko et al. (2022), "Video-Text Representation Learning via
    Differentiable Weak Temporal Alignment".
    """
    from vt_keras.losses.vt_twins import vt_twins_loss

    del batch
    opts, weight = _options(loss_config)
    seed = _step_seeds(ctx.step, int(loss_config.get("augment_seed", 0))) if opts["augment"] else None
    loss = vt_twins_loss(outputs["video_sequence"], outputs["text_sequence"],
                         video_mask=outputs["video_mask"], text_mask=outputs["text_mask"],
                         gather=ctx.gather, seed=seed, **opts)
    if weight > 0:
        from vt_keras.losses.contrastive import info_nce

        pooled = info_nce(outputs["video"], outputs["text"],
                          temperature=float(loss_config.get("info_nce_temperature", 0.05)), gather=ctx.gather)
        loss = loss + weight * tf.cast(pooled, loss.dtype)
    return loss


PLANTED_KEYS = ("clip_step", "caption_step", "caption_kind")


def read_planted_alignment(pattern):
    """`{video id: {"clip_step", "caption_step", "caption_kind": int arrays}}` of synthetic records.

    Records without the `synthetic/*` context keys (real data) are left out,
    so an empty dict means the ground truth is unknown.
    """
    from vt_keras.data.video_text import data_errors, list_files

    spec = {"id": tf.io.RaggedFeature(tf.string)}
    spec.update({f"synthetic/{k}": tf.io.RaggedFeature(tf.int64) for k in PLANTED_KEYS})
    truth = {}
    with data_errors():
        for records in tf.data.TFRecordDataset(list_files(pattern)).batch(256):
            context, _, _ = tf.io.parse_sequence_example(records, context_features=spec)
            ids = context["id"].to_list()
            values = {k: context[f"synthetic/{k}"].to_list() for k in PLANTED_KEYS}
            for i, vid in enumerate(ids):
                if vid and len(values["caption_kind"][i]):
                    truth[vid[0].decode("utf-8")] = {k: np.asarray(values[k][i], np.int64) for k in PLANTED_KEYS}
    return truth


def pair_alignments(video, text, video_lengths, text_lengths, gamma=0.1, theta=0.5):
    """Cost, S2DTW value and expected weak alignment of row-paired clip and caption sequences.

    Call: `pair_alignments(video [P, n, E], text [P, m, E], video_lengths [P],
    text_lengths [P]) → (cost [P, n, m], s2dtw [P], alignment [P, 2n + 1, 2m + 1])`
    as numpy arrays, for sequences with their valid rows first. `cost` is the
    shifted cosine distance `−⟨v_i, t_j⟩` of normalised rows; `alignment` is
    `∂ S2DTW / ∂ W` on the weak-alignment matrix, so cell `(2i + 1, 2j + 1)`
    is the expected use of the pair (clip i, caption j) and the others the
    expected use of the θ cells that let a path skip clips or captions.
    """
    import keras

    from vt_keras.losses.soft_dtw import soft_dtw, soft_dtw_alignment
    from vt_keras.losses.vt_twins import local_neighborhood_smoothing, weak_alignment_matrix

    def normalise(x):
        x = keras.ops.cast(x, "float32")
        return x * keras.ops.rsqrt(keras.ops.maximum(keras.ops.sum(x * x, axis=-1, keepdims=True), 1e-12))

    cost = -keras.ops.einsum("pid,pjd->pij", normalise(video), normalise(text))
    weak = weak_alignment_matrix(local_neighborhood_smoothing(cost, gamma), theta)
    rows = 2 * keras.ops.cast(video_lengths, "int32") + 1
    cols = 2 * keras.ops.cast(text_lengths, "int32") + 1
    value = soft_dtw(weak, gamma, row_lengths=rows, col_lengths=cols)
    alignment = soft_dtw_alignment(weak, gamma, row_lengths=rows, col_lengths=cols)
    return np.asarray(cost), np.asarray(value), np.asarray(alignment)


def embed_sequences(task, model, pattern, batch_size=256):
    """Per-clip and per-caption embeddings of every video of `pattern`, valid rows first.

    Returns a dict of numpy arrays: `ids` (str), `captions` (lists of the valid
    captions), `caption_index` (their positions in the record), `video`
    `[V, N, E]`, `text` `[V, M, E]` (padding rows zero), `video_lengths`,
    `text_lengths` `[V]`.
    """
    from vt_keras.data.video_text import data_errors

    parts = {k: [] for k in ("ids", "captions", "caption_index", "video", "text", "video_lengths", "text_lengths")}
    with data_errors():
        for batch in task.dataset(pattern, batch_size):
            out = model(task.model_inputs(batch), training=False)
            vmask, tmask = np.asarray(out["video_mask"], bool), np.asarray(out["text_mask"], bool)
            video, text = np.asarray(out["video_sequence"], np.float32), np.asarray(out["text_sequence"], np.float32)
            captions = batch["captions"].numpy()
            for b, vid in enumerate(batch["id"].numpy()):
                keep = np.flatnonzero(tmask[b])  # a caption may be empty: move the valid ones first
                video_b, text_b = np.zeros_like(video[b]), np.zeros_like(text[b])
                video_b[:vmask[b].sum()] = video[b][vmask[b]]
                text_b[:keep.size] = text[b][keep]
                parts["ids"].append(vid.decode("utf-8"))
                parts["captions"].append([captions[b, j].decode("utf-8") for j in keep])
                parts["caption_index"].append(keep)
                parts["video"].append(video_b)
                parts["text"].append(text_b)
                parts["video_lengths"].append(int(vmask[b].sum()))
                parts["text_lengths"].append(int(keep.size))
    if not parts["ids"]:
        raise DataError(f"data pattern {pattern}: found no video-text records; expected at least one")
    for key in ("video", "text", "video_lengths", "text_lengths"):
        parts[key] = np.asarray(parts[key])
    return parts


def s2dtw_retrieval_metrics(embedded, gamma=0.1, theta=0.5):
    """Text→video and video→text R@1/5/10 (percent), MedR, MnR ranked by S2DTW instead of pooled dot products.

    Scores every (caption sequence, video) pair of `embedded` (from
    `embed_sequences`) with `s2dtw_matrix`; lower S2DTW ranks higher.
    """
    from vt_keras.losses.vt_twins import s2dtw_matrix
    from vt_keras.metrics.retrieval import mean_rank, median_rank, recall_at_k

    scores = np.asarray(s2dtw_matrix(embedded["video"], embedded["text"], embedded["video_lengths"],
                                     embedded["text_lengths"], gamma, theta), np.float64)
    out = {}
    for prefix, similarity in (("s2dtw_t2v", -scores), ("s2dtw_v2t", -scores.T)):
        for k in (1, 5, 10):
            out[f"{prefix}/R@{k}"] = 100.0 * recall_at_k(similarity, k)
        out[f"{prefix}/MedR"] = median_rank(similarity)
        out[f"{prefix}/MnR"] = mean_rank(similarity)
    return out


def planted_alignment_scores(embedded, truth, gamma=0.1, theta=0.5):
    """How well a model's clip–caption similarities and S2DTW alignments find the planted truth.

    For every video of `embedded` (from `embed_sequences`) with ground truth
    in `truth` (from `read_planted_alignment`; caption kinds 0 aligned, 1
    shuffled with a neighbour, 2 irrelevant), on its own captions:

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

    Returns a dict of floats plus `num_videos` (0 when no video has ground truth).
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
