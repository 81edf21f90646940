r"""bin/plot_alignment: cost matrices and soft-DTW alignments of a positive and a negative pair (VT-TWINS, Figure 2).

    bin/plot_alignment --workdir=workdirs/vt_twins --data='<data>/validate-*.tfrecord' \
        --video_id=video00042 --output=alignment.png

Restores a trained retrieval model from its workdir and embeds the clips and
captions of the videos of --data. For one video (--video_id, or by default
the first with a planted irrelevant caption, else the first) it draws, as in
the supplement of Ko et al. (CVPR 2022), Figure 2:

- the positive pair, the video's clips against its own captions, and
- a negative pair, the same clips against the captions of the video whose
  captions score the lowest S2DTW with them (the hardest negative of --data),

each as the shifted cosine distance `−⟨clip, caption⟩` and as the expected
soft-DTW alignment on the weak-alignment matrix (θ cells between the pairs,
so a path may skip a clip or a caption). Captions are rows, clips columns.
When the records carry the planted ground truth (synthetic data), irrelevant
captions are labelled red, shuffled ones orange, and circles mark the
(clip, caption) pairs that show the same step. The binary also prints, over
all of --data, the planted-alignment scores of the model
(`vt_keras.metrics.alignment.planted_alignment_scores`, when the records
carry ground truth) and its retrieval metrics ranked by S2DTW rather than by
pooled embeddings (`s2dtw_retrieval_metrics`), and writes them as JSON with
--scores_output. γ and θ are the model's `loss.vt_twins` values; a model
trained with another loss is analysed with the paper's (`PAPER_ALIGNMENT`).
"""
import json
import sys
import textwrap

import numpy as np
from absl import flags

from vt_keras.cli import common
from vt_keras.errors import ConfigError, DataError

FLAGS = flags.FLAGS
_KIND_COLOURS = {0: "black", 1: "darkorange", 2: "red"}
_KIND_NAMES = {0: "", 1: " [shuffled]", 2: " [irrelevant]"}


def define_flags():
    flags.DEFINE_string("workdir", None, "The workdir of a trained retrieval model (any retrieval loss).")
    flags.DEFINE_string("data", None, "File pattern of video-text records holding the video.")
    flags.DEFINE_string("video_id", None, "Id of the video to plot (default: the first with a planted "
                        "irrelevant caption, else the first video of --data).")
    flags.DEFINE_string("output", "alignment.png", "The PNG to write.")
    flags.DEFINE_string("scores_output", None, "Optional JSON file for the planted-alignment and S2DTW "
                        "retrieval scores.")
    flags.mark_flags_as_required(["workdir", "data"])


def _choose_video(ids, truth, video_id, pattern):
    if video_id is not None:
        if video_id not in ids:
            raise DataError(f"--video_id={video_id} is not among the {len(ids)} videos of --data={pattern}")
        return ids.index(video_id)
    for i, vid in enumerate(ids):
        if vid in truth and (truth[vid]["caption_kind"] == 2).any():
            return i
    return 0


def _draw(fig, ax, matrix, weak, n, m, captions, kinds, match, title, cmap, label, caption_text=True, limit=1.0):
    """One panel: captions as rows, clips as columns, θ cells at half steps when `weak`."""
    if weak:
        extent = (-0.75, n - 0.25, m - 0.25, -0.75)  # cell k of 2n + 1 is centred on (k − 1) / 2
    else:
        extent = (-0.5, n - 0.5, m - 0.5, -0.5)
    image = ax.imshow(matrix.T, cmap=cmap, interpolation="nearest", extent=extent, aspect="auto",
                      vmin=0.0 if weak else -limit, vmax=limit)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label=label)
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(i) for i in range(n)], fontsize=7)
    ax.set_xlabel("clip")
    ax.set_yticks(range(m))
    labels = [(textwrap.shorten(f"{j}: {c}", 34, placeholder="…") if caption_text else str(j))
              + _KIND_NAMES.get(k, "") for j, (c, k) in enumerate(zip(captions, kinds))]
    ax.set_yticklabels(labels, fontsize=7)
    for tick, k in zip(ax.get_yticklabels(), kinds):
        tick.set_color(_KIND_COLOURS.get(k, "black"))
    if match is not None:
        i, j = np.nonzero(match)
        ax.scatter(i, j, s=70, facecolors="none", edgecolors="deepskyblue", linewidths=1.4)
    ax.set_title(title, fontsize=9)


def plot_alignment(workdir, pattern, output, video_id=None, scores_output=None):
    """Writes the alignment figure of one video of `pattern`; returns what it drew and the scores."""
    # Imported here, not at the top: --help and flag errors answer without loading TensorFlow.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vt_keras.metrics.alignment import (PAPER_ALIGNMENT, pair_alignments, planted_alignment_scores,
                                            s2dtw_retrieval_metrics)
    from vt_keras.tasks.retrieval_vt_twins import read_planted_alignment
    from vt_keras import tasks
    from vt_keras.train import checkpoints

    config = checkpoints.load_config(workdir)
    if config.task != "retrieval":
        raise ConfigError(f"--workdir={workdir} holds a {config.task!r} model; expected a retrieval model")
    alignment = dict(PAPER_ALIGNMENT)
    if config.loss.name == "vt_twins":
        alignment = dict(gamma=config.loss.vt_twins.gamma, theta=config.loss.vt_twins.theta)
    task, model = tasks.restore_model(config, workdir)
    truth = read_planted_alignment(pattern)
    embedded = task.embed_sequences(model, pattern)
    ids, captions, video, text = embedded["ids"], embedded["captions"], embedded["video"], embedded["text"]
    vlen, tlen = embedded["video_lengths"], embedded["text_lengths"]
    if len(ids) < 2:
        raise DataError(f"--data={pattern}: found 1 video; expected at least 2 (a negative pair needs another video)")
    a = _choose_video(ids, truth, video_id, pattern)
    # S2DTW of this video's clips with every video's captions: the lowest other is the hardest negative.
    many = len(ids)
    _, scores, _ = pair_alignments(np.repeat(video[a:a + 1], many, 0), text, np.repeat(vlen[a:a + 1], many), tlen,
                                   **alignment)
    others = np.delete(np.arange(many), a)
    b = int(others[np.argmin(scores[others])])
    cost, value, align = pair_alignments(video[[a, a]], text[[a, b]], vlen[[a, a]], tlen[[a, b]], **alignment)
    gamma, theta = alignment["gamma"], alignment["theta"]

    # A shared symmetric colour range fitted to both cost matrices: trained models often use a
    # narrow band of cosines, which a fixed [-1, 1] would wash out.
    limit = max(0.05, float(max(np.abs(cost[r, :int(vlen[a]), :int(tlen[k])]).max() for r, k in ((0, a), (1, b)))))
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 9.5))
    n = int(vlen[a])
    clip_step = truth.get(ids[a], {}).get("clip_step")
    for row, (k, name) in enumerate(((a, "positive"), (b, "negative"))):
        m = int(tlen[k])
        t = truth.get(ids[k])
        index = embedded["caption_index"][k]
        kinds = t["caption_kind"][index] if t is not None else np.zeros(m, int)
        match = None
        if t is not None and clip_step is not None:
            match = clip_step[:n, None] == t["caption_step"][index][None, :]
        _draw(fig, axes[row, 0], cost[row, :n, :m], False, n, m, captions[k][:m], kinds, match,
              f"{name} pair: clips of {ids[a]}, captions of {ids[k]}\ncost −⟨clip, caption⟩", "RdBu_r", "cost",
              limit=limit)
        _draw(fig, axes[row, 1], align[row, :2 * n + 1, :2 * m + 1], True, n, m, captions[k][:m], kinds, match,
              f"{name} pair: expected soft-DTW alignment on the weak matrix\nS2DTW = {value[row]:.2f} "
              f"(γ = {gamma:g}, θ = {theta:g}; θ cells between the pairs)", "magma", "expected alignment",
              caption_text=False)
    note = "circles: caption and clip show the same planted step" if truth else "no planted ground truth in --data"
    fig.suptitle(f"model trained with loss {config.loss.name}; rows are captions, columns clips; {note}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=72)
    plt.close(fig)

    scores = planted_alignment_scores(embedded, truth, **alignment)
    scores.update(s2dtw_retrieval_metrics(embedded, **alignment))
    if scores_output:
        with open(scores_output, "w") as f:
            json.dump(scores, f, indent=2, sort_keys=True)
    return {"video_id": ids[a], "negative_id": ids[b], "s2dtw": [float(v) for v in value], "scores": scores}


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    drawn = plot_alignment(FLAGS.workdir, FLAGS.data, FLAGS.output, FLAGS.video_id, FLAGS.scores_output)
    print(f"wrote {FLAGS.output}: video {drawn['video_id']} (S2DTW {drawn['s2dtw'][0]:.3f}) against its captions "
          f"and those of {drawn['negative_id']} (S2DTW {drawn['s2dtw'][1]:.3f})")
    scores = drawn["scores"]
    print("over --data: " + " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(scores.items())))
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
