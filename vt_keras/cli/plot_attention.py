r"""bin/plot_attention: plot one video's video and audio attention over time (Goyal et al., Figure 1).

    bin/plot_attention --workdir=workdirs/rnn_cm_concat --data='data/validate-*.tfrecord' \
        --video_id=AbCdEfGhIjK --output=attention.png

Restores a trained classifier from its workdir, runs one video (the first of
--data unless --video_id names one) and draws, for the video and the audio
stream, the weights over time that the aggregator sums the frames with:

- rnn (attention clusters): each unit's softmax over time; for the cm_*
  fusions the weights actually summed, `α + g·F(α_other)`;
- transformer: each head's attention *received* by every frame (mean over
  the valid query frames) in the last layer, cross-modal term included;
- netvlad: each cluster's soft assignment of every frame (cm_*: with the
  transformed other-modality assignment added).

The top panels show the mean over units and the three units with the highest
peak; the bottom panels show every unit as a heat map. Padded frames are cut
off. Early fusion has one joint stream and gives one column.
"""
import sys

import numpy as np
from absl import flags

from vt_keras.cli import common
from vt_keras.errors import ConfigError, DataError

FLAGS = flags.FLAGS
_UNIT_NAMES = {"rnn": "attention unit", "transformer": "head", "netvlad": "cluster"}


def define_flags():
    flags.DEFINE_string("workdir", None, "The workdir of a trained rnn_*, transformer_* or netvlad_* classifier.")
    flags.DEFINE_string("data", None, "File pattern of frame-level records holding the video.")
    flags.DEFINE_string("video_id", None, "Id of the video to plot (default: the first video of --data).")
    flags.DEFINE_string("output", "attention.png", "The PNG to write.")
    flags.mark_flags_as_required(["workdir", "data"])


def _received(probs_bhqk, mask):
    """Attention each key frame receives, averaged over valid queries: `[B, H, T]`."""
    m = np.asarray(mask, np.float32)
    probs = np.asarray(probs_bhqk, np.float64) * m[:, None, :, None]
    return probs.sum(axis=2) / np.maximum(m.sum(axis=1), 1.0)[:, None, None]


def _single_stream(agg_name, layer, x, mask):
    """Weights `[B, U, T]` of a one-stream aggregator."""
    if agg_name == "rnn":
        return np.asarray(layer(x, mask=mask, return_attention=True)[1])
    if agg_name == "netvlad":
        return np.asarray(layer(x, mask=mask, training=False, return_assignments=True)[1])
    _, scores = layer(x, mask=mask, training=False, return_attention_scores=True)
    return _received(scores[-1], mask)


def _cross_stream(agg_name, layer, video, audio, mask, correlation):
    """Weights `([B, Uv, T], [B, Ua, T])` of a cross-modal aggregator."""
    kwargs = dict(mask=(mask, mask), correlation=correlation, training=False)
    if agg_name == "rnn":
        _, (wv, wa) = layer((video, audio), return_attention=True, **kwargs)
        return np.asarray(wv), np.asarray(wa)
    if agg_name == "netvlad":
        _, (wv, wa) = layer((video, audio), return_assignments=True, **kwargs)
        return np.asarray(wv), np.asarray(wa)
    _, scores = layer((video, audio), return_attention_scores=True, **kwargs)
    probs_v, probs_a = scores[-1]
    return _received(probs_v, mask), _received(probs_a, mask)


def attention_maps(model, model_cfg, features, inputs):
    """The aggregator's weights over time for a batch, by stream.

    Args:
        model: a classifier built by `build_video_classifier`.
        model_cfg: its `config.model`.
        features: its `(name, dim)` features.
        inputs: `{feature: [B, T, dim], "mask": [B, T]}`.

    Returns:
        `(streams, correlation)`: a list of `(stream name, weights [B, U, T])`
        and the tower's probability `[B]` for cm_* models (else None).
    """
    from vt_keras.models.video_classifier import aggregator_inputs

    agg_name, fusion = model_cfg.get("aggregator", "pool"), model_cfg.get("fusion", "late")
    if agg_name not in _UNIT_NAMES:
        raise ConfigError(f"model.aggregator={agg_name!r} has no attention weights; expected a model "
                          f"with aggregator {', '.join(sorted(_UNIT_NAMES))}")
    names = [n for n, _ in features]
    mask = inputs["mask"]
    # What the aggregators see, computed with the model's own layers.
    frames, correlation, tower_out = aggregator_inputs(model, model_cfg, features, inputs)
    frames = dict(zip(names, frames))
    if fusion == "early":
        joint = np.concatenate([np.asarray(frames[n]) for n in names], axis=-1)
        return [("+".join(names), _single_stream(agg_name, model.get_layer("early_aggregator"), joint, mask))], None
    if fusion == "late":
        return [(n, _single_stream(agg_name, model.get_layer(f"{n}_aggregator"), frames[n], mask))
                for n in names], None
    wv, wa = _cross_stream(agg_name, model.get_layer("cross_modal_aggregator"), frames[names[0]],
                           frames[names[1]], mask, correlation)
    return [(names[0], wv), (names[1], wa)], np.asarray(tower_out["probability"])


def find_video(task, pattern, video_id=None, batch_size=64):
    """The batch entry of `video_id` (default: the first video) as numpy arrays of batch size 1."""
    from vt_keras.data import yt8m

    seen = 0
    for batch in yt8m.iterate(task.dataset(pattern, batch_size, training=False)):
        ids = [x.decode() for x in batch["id"].numpy()]
        hits = [i for i, x in enumerate(ids) if video_id is None or x == video_id]
        if hits:
            i = hits[0]
            return {k: v.numpy()[i:i + 1] for k, v in batch.items()}
        seen += len(ids)
    raise DataError(f"--video_id={video_id} is not among the {seen} videos of --data={pattern}")


def plot_attention(workdir, pattern, output, video_id=None):
    """Writes the attention plot of one video of `pattern` for the model of `workdir`; returns what it drew."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from vt_keras import tasks
    from vt_keras.train import checkpoints

    config = checkpoints.load_config(workdir)
    if config.get("task") != "yt8m":
        raise ConfigError(f"--workdir={workdir} holds a {config.get('task')!r} model; expected a yt8m classifier")
    agg_name = config.model.get("aggregator", "pool")
    if agg_name not in _UNIT_NAMES:
        raise ConfigError(f"--workdir={workdir} has model.aggregator={agg_name!r}, which has no attention "
                          f"weights; expected one of {', '.join(sorted(_UNIT_NAMES))}")
    task, model = tasks.restore_model(config, workdir)
    video = find_video(task, pattern, video_id)
    streams, correlation = attention_maps(model, config.model, task.features, task.model_inputs(video))
    frames = int(video["num_frames"][0])
    streams = [(name, np.asarray(w[0], np.float64)[:, :frames]) for name, w in streams]
    probs = np.asarray(model(task.model_inputs(video), training=False))[0]

    unit = _UNIT_NAMES[agg_name]
    fig, axes = plt.subplots(2, len(streams), figsize=(6.2 * len(streams), 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1.1, 1.0]})
    t = np.arange(frames)
    for col, (name, weights) in enumerate(streams):
        top, heat = axes[0, col], axes[1, col]
        for k in np.argsort(-weights.max(axis=1))[:3]:
            top.plot(t, weights[k], lw=1.0, alpha=0.7, label=f"{unit} {k}")
        top.plot(t, weights.mean(axis=0), color="black", lw=2.0, label=f"mean over {len(weights)}")
        top.set_title(f"{name}: weights over time")
        top.set_xlim(-0.5, frames - 0.5)
        top.set_ylabel("weight")
        top.legend(fontsize=7, loc="upper right")
        image = heat.imshow(weights, aspect="auto", interpolation="nearest", cmap="viridis",
                            extent=(-0.5, frames - 0.5, len(weights) - 0.5, -0.5))
        heat.set_xlabel("frame (seconds)")
        heat.set_ylabel(unit)
        heat.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=heat, fraction=0.046, pad=0.02)
    labels = np.flatnonzero(video["labels"][0])
    title = (f"video {video['id'][0].decode()} ({frames} frames), {agg_name}_{config.model.get('fusion')}; "
             f"labels {labels.tolist()[:6]}, top prediction {int(np.argmax(probs))} ({probs.max():.2f})")
    if correlation is not None:
        title += f"; tower P(correlated) = {float(correlation[0]):.2f}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=90)
    plt.close(fig)
    return {"video_id": video["id"][0].decode(), "num_frames": frames, "streams": dict(streams),
            "correlation": None if correlation is None else float(correlation[0])}


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    drawn = plot_attention(FLAGS.workdir, FLAGS.data, FLAGS.output, FLAGS.video_id)
    print(f"wrote {FLAGS.output}: video {drawn['video_id']}, {drawn['num_frames']} frames, "
          f"streams {', '.join(drawn['streams'])}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
