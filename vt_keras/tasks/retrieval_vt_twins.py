"""The VT-TWINS (S2DTW) loss on the retrieval task, and the planted truth of synthetic records.

`loss.name = "vt_twins"` trains the `DualEncoder` with
`vt_twins_loss(**loss.vt_twins)` (Ko et al., CVPR 2022) on the *per-clip* and
*per-caption* embeddings (`video_sequence`, `text_sequence`) and their masks:
every (caption sequence, video) pair of the global batch is scored by S2DTW
in one batched soft-DTW call, and InfoNCE over those scores pulls each video
towards its own captions. `loss.info_nce_weight > 0` adds the pooled
symmetric InfoNCE of `loss.info_nce` (weight 0 by default: VT-TWINS alone).
Evaluation stays the task's: pooled embeddings and dot products, as the paper
evaluates zero-shot retrieval.

The temporal augmentation (`loss.vt_twins.augment`) draws from a
`keras.random.SeedGenerator` seeded with `loss.augment_seed`, made in
`build` inside `strategy.scope()` and checkpointed with the run, so a resumed
run continues the draws where it stopped. Its state is one variable for all
replicas: each replica applies the same draws to its own examples.

`read_planted_alignment` reads the planted ground truth of synthetic records
(`synthetic/clip_step`, `synthetic/caption_step`, `synthetic/caption_kind`)
that `vt_keras.metrics.alignment.planted_alignment_scores` scores a trained
model's alignments against.

Example:

```python
config = load_config_file("configs/retrieval/vt_twins.py")
RetrievalTask.prepare_config(config)
results, model = vt_keras.tasks.train(config, "runs/vt_twins")
```
"""
import keras
import numpy as np
import tensorflow as tf

from vt_keras.data.video_text import data_errors, list_files
from vt_keras.errors import ConfigError
from vt_keras.losses.contrastive import info_nce
from vt_keras.losses.vt_twins import vt_twins_loss
from vt_keras.tasks.retrieval import RETRIEVAL_LOSSES, RetrievalLoss


@RETRIEVAL_LOSSES.register("vt_twins")
class VTTwins(RetrievalLoss):
    """VT-TWINS S2DTW contrastive loss of the clip and caption sequences, global batch.

    Call: `loss(outputs, batch, ctx) → scalar`, with `outputs` the
    `DualEncoder`'s dict (`video_sequence [B, N, E]`, `video_mask [B, N]`,
    `text_sequence [B, M, E]`, `text_mask [B, M]`, pooled `video`, `text`
    `[B, E]`): `vt_twins_loss(..., **loss.vt_twins) + loss.info_nce_weight ·
    info_nce(video, text, **loss.info_nce)`, both over the batch gathered
    with `ctx.gather`.

    Implements Ko et al. (2022), "Video-Text Representation Learning via
    Differentiable Weak Temporal Alignment".
    """

    def __init__(self, config):
        super().__init__(config)
        lc = config.loss
        for key in ("gamma", "temperature"):
            if not lc.vt_twins[key] > 0:
                raise ConfigError(f"loss.vt_twins.{key}={lc.vt_twins[key]}: expected a value > 0")
        if lc.info_nce_weight < 0:
            raise ConfigError(f"loss.info_nce_weight={lc.info_nce_weight}: expected >= 0 "
                              "(0 turns the pooled InfoNCE term off)")
        self.seed = None

    def build(self):
        """The augmentation's seed generator (None without augmentation), to checkpoint with the run."""
        if not self.config.loss.vt_twins.augment:
            return None
        self.seed = keras.random.SeedGenerator(self.config.loss.augment_seed, name="vt_twins_augment")
        state = tf.Module(name="vt_twins_state")
        state.augment_seed_state = self.seed.state
        return state

    def __call__(self, outputs, batch, ctx):
        del batch
        lc = self.config.loss
        if lc.vt_twins.augment and self.seed is None:
            raise ConfigError("loss.vt_twins.augment=True needs its seed generator: build the model with "
                              "RetrievalTask.build_model() before calling loss_fn")
        loss = vt_twins_loss(outputs["video_sequence"], outputs["text_sequence"],
                             video_mask=outputs["video_mask"], text_mask=outputs["text_mask"],
                             gather=ctx.gather, seed=self.seed, **lc.vt_twins)
        if lc.info_nce_weight > 0:
            pooled = info_nce(outputs["video"], outputs["text"], gather=ctx.gather, **lc.info_nce)
            loss = loss + lc.info_nce_weight * tf.cast(pooled, loss.dtype)
        return loss


PLANTED_KEYS = ("clip_step", "caption_step", "caption_kind")


def read_planted_alignment(pattern):
    """`{video id: {"clip_step", "caption_step", "caption_kind": int arrays}}` of synthetic records.

    Records without the `synthetic/*` context keys (real data) are left out,
    so an empty dict means the ground truth is unknown.
    """
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
