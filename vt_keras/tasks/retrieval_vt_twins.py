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

from vt_keras.errors import ConfigError
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
