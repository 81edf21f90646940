"""CrossCLR as a loss of the retrieval task: `loss.name = "crossclr"`.

The COOT-style objective of the CrossCLR supplement (Zolfaghari et al., ICCV
2021), `L = local_weight · L_local + global_weight · L_global` (paper: 1 and
0.6), each term a `CrossCLRLoss` over the global batch:

- local: clip/sentence pairs. Row (b, i) pairs clip i of video b
  (`video_sequence`) with caption i (`text_sequence`), for every valid
  caption (`caption_mask`, which implies a valid clip). The rows of all
  replicas are gathered first, then the padding is dropped, so the loss sees
  one variable-size global set of pairs. The queue (`loss.queue_size`) is on
  this term only, as in the paper.
- global: the pooled `video` / `text` (video/paragraph) embeddings, no queue.

Proximity needs each sample's *raw* input features (never the learned
embeddings). Video–text records carry one expert vector per video, none per
clip or caption, so:

- a clip's raw input is its own clip feature vector (`clips`), the input the
  encoder sees (COOT's clip input is likewise the clip's frame features);
- a caption's raw input is a hashed bag of its lower-case words
  (`loss.caption_feature_dim` buckets, L2-normalised; punctuation removed),
  standing in for the sentence's BERT features of the paper;
- a video's / paragraph's raw input is the record's expert feature named by
  `loss.video_features` / `loss.text_features` (add them to
  `data.expert_features`); an empty name derives it from the batch instead:
  the mean of the valid clips, or the L2-normalised bag of words of all
  valid captions.

Both terms are `CrossCLRLoss(**loss.crossclr)`, the global one without a
queue; the config takes those values from `vt_keras.losses.crossclr.PRESETS`.
The state (the two losses and the local queue) is made by `build` inside
`strategy.scope()` (the task's `build_model`) and checkpointed through
`RetrievalTask.trackables()`. Every replica enqueues the same gathered rows,
so the queue is identical on all replicas and a resumed run continues with
the queue it saved.

Example:

```python
config = load_config_file("configs/retrieval/crossclr.py:lsmdc")
results, model = vt_keras.tasks.train(config, "runs/crossclr")
```
"""
import tensorflow as tf
from keras import ops

from vt_keras.errors import ConfigError, DataError
from vt_keras.losses.crossclr_queue import CrossCLRLoss
from vt_keras.ops import l2_normalize, masked_mean
from vt_keras.tasks.retrieval import RETRIEVAL_LOSSES, RetrievalLoss

EXPERT_PREFIX = "expert/"


class CrossCLRState(tf.Module):
    """The two CrossCLR losses of one run; `local` owns the queue."""

    def __init__(self, local, global_, local_weight, global_weight):
        super().__init__(name="crossclr_state")
        self.local = local
        # The queue (a Keras layer) is what a checkpoint must carry; the loss itself is not trackable.
        self.local_queue = local.queue
        self.global_ = global_
        self.local_weight = local_weight
        self.global_weight = global_weight


def _number(lcfg, key, minimum=0.0):
    value = lcfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"loss.{key}={value!r}: expected a number >= {minimum}")
    return float(value)


def caption_bag_of_words(captions, dim):
    """Hashed, L2-normalised bags of lower-case words of caption strings.

    Args:
        captions: string tensor of any shape `[...]` ("" gives zeros).
        dim: hash buckets.

    Returns:
        float32 `[..., dim]`.
    """
    return l2_normalize(caption_word_counts(captions, dim))


def caption_word_counts(captions, dim):
    """Unnormalised hashed word counts `[..., dim]` of caption strings."""
    text = tf.strings.lower(captions, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[\pP\pS]", " ")
    ids = tf.strings.to_hash_bucket_fast(tf.strings.split(text), dim)
    # -1 pads the ragged word axis and one_hot maps it to zeros.
    dense = ids.to_tensor(default_value=-1)
    return tf.reduce_sum(tf.one_hot(dense, dim, dtype=tf.float32), axis=-2)


def global_features(batch, lcfg):
    """`(video [B, F_v], text [B, F_t])` raw per-video features for proximity."""
    out = []
    for key, derive in (("video_features", _mean_clip), ("text_features", _paragraph_bag)):
        name = lcfg[key]
        if not name:
            out.append(derive(batch, lcfg))
        elif EXPERT_PREFIX + name not in batch:
            raise DataError(f"loss.{key}={name!r}: the batch has no '{EXPERT_PREFIX}{name}'; "
                            "expected it in data.expert_features")
        else:
            out.append(tf.cast(batch[EXPERT_PREFIX + name], tf.float32))
    return out


def _mean_clip(batch, lcfg):
    del lcfg
    return masked_mean(batch["clips"], batch["clip_mask"], axis=1)


def _paragraph_bag(batch, lcfg):
    counts = caption_word_counts(batch["captions"], lcfg.caption_feature_dim)
    counts = counts * tf.cast(batch["caption_mask"], tf.float32)[..., None]
    return l2_normalize(tf.reduce_sum(counts, 1))


def local_inputs(outputs, batch, lcfg, gather):
    """The valid clip/caption pairs of the global batch as the four loss inputs.

    Returns `(clip_emb [P, E], caption_emb [P, E], clip_features [P, clip_dim],
    caption_features [P, caption_feature_dim])`, P the valid pairs of all
    replicas, in replica, video, clip order.
    """
    dim = lcfg.caption_feature_dim
    clips = batch["clips"]
    rows = [outputs["video_sequence"], outputs["text_sequence"], tf.cast(clips, tf.float32),
            caption_bag_of_words(batch["captions"], dim), tf.cast(batch["caption_mask"], tf.int32)]
    # Gather fixed-shape [B*N, ...] rows, then drop padding: every replica gets the same pairs.
    # (The mask travels as int32: all-gather takes no booleans.)
    flat = [gather(ops.reshape(x, (-1,) + tuple(x.shape[2:]))) for x in rows]
    valid = flat.pop() > 0
    return [tf.boolean_mask(x, valid) for x in flat]


@RETRIEVAL_LOSSES.register("crossclr")
class CrossCLRRetrieval(RetrievalLoss):
    """`local_weight · L_local + global_weight · L_global` over the global batch (see the module docstring).

    Call: `loss(outputs, batch, ctx) → scalar`, float32, the same on every
    replica: `outputs` the `DualEncoder` outputs (`video_sequence`,
    `text_sequence`, `video`, `text`), `batch` the parsed records (`clips`,
    `captions`, `caption_mask`, `clip_mask`, and the expert features the
    config names), `ctx` the loop's `StepContext`.
    """

    def __init__(self, config):
        super().__init__(config)
        lcfg = config.loss
        self.local_weight = _number(lcfg, "local_weight")
        self.global_weight = _number(lcfg, "global_weight")
        if self.local_weight == 0 and self.global_weight == 0:
            raise ConfigError("loss.local_weight and loss.global_weight are both 0; expected at least one > 0")
        experts = tuple(config.data.expert_features)
        for key in ("video_features", "text_features"):
            name = lcfg[key]
            if name and name not in experts:
                raise ConfigError(f"loss.{key}={name!r} is not in data.expert_features={experts}; "
                                  f"add it there or set loss.{key}='' to derive it from the batch")
        _number(lcfg, "caption_feature_dim", minimum=1)
        self.state = None

    def build(self):
        """The two `CrossCLRLoss`es (`loss.crossclr`; the global one without a queue) and the local queue."""
        config, options = self.config, self.config.loss.crossclr.to_dict()
        local = CrossCLRLoss(name="crossclr_local", **options)
        if local.queue_size and self.local_weight > 0:
            embedding_dim = config.model.dual_encoder.embedding_dim
            local.build(embedding_dim, embedding_dim, config.data.clip_dim, config.loss.caption_feature_dim)
        global_ = CrossCLRLoss(name="crossclr_global", **dict(options, queue_size=0))
        self.state = CrossCLRState(local, global_, self.local_weight, self.global_weight)
        return self.state

    def __call__(self, outputs, batch, ctx):
        if self.state is None:
            raise ConfigError("loss.name='crossclr' needs its state: build the model with "
                              "RetrievalTask.build_model() before calling loss_fn")
        lcfg, state = self.config.loss, self.state
        total = 0.0
        if state.local_weight > 0:
            local = state.local.compute(*local_inputs(outputs, batch, lcfg, ctx.gather))
            total = total + state.local_weight * local
        if state.global_weight > 0:
            video_features, text_features = global_features(batch, lcfg)
            glob = state.global_.compute(outputs["video"], outputs["text"], video_features, text_features,
                                         gather=ctx.gather)
            total = total + state.global_weight * glob
        return total
