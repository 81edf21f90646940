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

The state (the local loss and its queue) is made by `make_state` inside
`strategy.scope()` (the task's `build_model`) and checkpointed through
`RetrievalTask.trackables()`. Every replica enqueues the same gathered rows,
so the queue is identical on all replicas and a resumed run continues with
the queue it saved.

Example:

```python
config = get_config("youcook2")  # configs/retrieval/crossclr.py
results, model = vt_keras.train.loop.train(config, "runs/crossclr")
```
"""
import tensorflow as tf
from keras import ops

from vt_keras.errors import ConfigError, DataError
from vt_keras.losses.crossclr_queue import CrossCLRLoss
from vt_keras.tasks.retrieval import RETRIEVAL_LOSSES

EXPERT_PREFIX = "expert/"
# Options of `CrossCLRLoss` read from `config.loss`, with the defaults of YouCook2
# (supplement, Table 1) where the config leaves them out.
LOSS_OPTIONS = dict(temperature=0.03, weight_temperature=35e-4, intra_weight=0.8,
                    prune_threshold=0.9, reference_compat=False, num_positives=0,
                    positive_weight=0.0)


class CrossCLRState(tf.Module):
    """The two CrossCLR losses of one run; `local` owns the queue."""

    def __init__(self, local, global_, local_weight, global_weight):
        super().__init__(name="crossclr_state")
        self.local = local
        self.global_ = global_
        self.local_weight = local_weight
        self.global_weight = global_weight


def _number(lcfg, key, default, minimum=0.0):
    value = lcfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"loss.{key}={value!r}: expected a number >= {minimum}")
    return float(value)


def make_state(config):
    """Builds the `CrossCLRState` of `config` (call inside `strategy.scope()`)."""
    lcfg = config.loss
    options = {key: lcfg.get(key, default) for key, default in LOSS_OPTIONS.items()}
    options["reference_compat"] = bool(options["reference_compat"])
    queue_size = lcfg.get("queue_size", 0)
    local_weight = _number(lcfg, "local_weight", 1.0)
    global_weight = _number(lcfg, "global_weight", 0.6)
    if local_weight == 0 and global_weight == 0:
        raise ConfigError("loss.local_weight and loss.global_weight are both 0; expected at least one > 0")
    experts = tuple(config.data.get("expert_features", ()))
    for key in ("video_features", "text_features"):
        name = lcfg.get(key, "")
        if name and name not in experts:
            raise ConfigError(f"loss.{key}={name!r} is not in data.expert_features={experts}; "
                              f"add it there or set loss.{key}='' to derive it from the batch")
    width = int(_number(lcfg, "caption_feature_dim", 64, minimum=1))
    local = CrossCLRLoss(queue_size=queue_size, name="crossclr_local", **options)
    if queue_size and local_weight > 0:
        embedding_dim = int(config.model.embedding_dim)
        local.build(embedding_dim, embedding_dim, int(config.data.clip_dim), width)
    global_ = CrossCLRLoss(queue_size=0, name="crossclr_global", **options)
    return CrossCLRState(local, global_, local_weight, global_weight)


def caption_bag_of_words(captions, dim):
    """Hashed, L2-normalised bags of lower-case words of caption strings.

    Args:
        captions: string tensor of any shape `[...]` ("" gives zeros).
        dim: hash buckets.

    Returns:
        float32 `[..., dim]`.
    """
    counts = caption_word_counts(captions, dim)
    return counts * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(counts), -1, keepdims=True), 1e-12))


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
        name = lcfg.get(key, "")
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
    mask = tf.cast(batch["clip_mask"], tf.float32)[..., None]
    return tf.reduce_sum(batch["clips"] * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)


def _paragraph_bag(batch, lcfg):
    dim = int(lcfg.get("caption_feature_dim", 64))
    counts = caption_word_counts(batch["captions"], dim)
    counts = counts * tf.cast(batch["caption_mask"], tf.float32)[..., None]
    bag = tf.reduce_sum(counts, 1)
    return bag * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(bag), -1, keepdims=True), 1e-12))


def local_inputs(outputs, batch, lcfg, gather):
    """The valid clip/caption pairs of the global batch as the four loss inputs.

    Returns `(clip_emb [P, E], caption_emb [P, E], clip_features [P, clip_dim],
    caption_features [P, caption_feature_dim])`, P the valid pairs of all
    replicas, in replica, video, clip order.
    """
    dim = int(lcfg.get("caption_feature_dim", 64))
    clips = batch["clips"]
    rows = [outputs["video_sequence"], outputs["text_sequence"], tf.cast(clips, tf.float32),
            caption_bag_of_words(batch["captions"], dim), tf.cast(batch["caption_mask"], tf.int32)]
    # Gather fixed-shape [B*N, ...] rows, then drop padding: every replica gets the same pairs.
    # (The mask travels as int32: all-gather takes no booleans.)
    flat = [gather(ops.reshape(x, (-1,) + tuple(x.shape[2:]))) for x in rows]
    valid = flat.pop() > 0
    return [tf.boolean_mask(x, valid) for x in flat]


@RETRIEVAL_LOSSES.register("crossclr")
def crossclr_retrieval_loss(outputs, batch, ctx, loss_config, state=None):
    """`local_weight · L_local + global_weight · L_global` over the global batch.

    Args:
        outputs: the `DualEncoder` outputs (`video_sequence`, `text_sequence`,
            `video`, `text`).
        batch: the parsed records (`clips`, `captions`, `caption_mask`,
            `clip_mask`, and the expert features the config names).
        ctx: the loop's `StepContext` (its `gather` gives the global batch).
        loss_config: `config.loss`.
        state: the `CrossCLRState` of `make_state` (the task passes it).

    Returns:
        A float32 scalar, the same on every replica.
    """
    if state is None:
        raise ConfigError("loss.name='crossclr' needs its state: build the model with "
                          "RetrievalTask.build_model() before calling loss_fn")
    total = 0.0
    if state.local_weight > 0:
        local = state.local.compute(*local_inputs(outputs, batch, loss_config, ctx.gather))
        total = total + state.local_weight * local
    if state.global_weight > 0:
        video_features, text_features = global_features(batch, loss_config)
        glob = state.global_.compute(outputs["video"], outputs["text"], video_features, text_features,
                                     gather=ctx.gather)
        total = total + state.global_weight * glob
    return total


crossclr_retrieval_loss.make_state = make_state
