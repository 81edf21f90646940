"""Video–text retrieval on the one trainer: a `DualEncoder` trained contrastively.

Data: video–text records (docs/video_text_format.md), one per video. Training
pairs each video's pooled clip embedding with its pooled caption embedding
(the L2-normalised mean of its valid captions' embeddings) and minimises the
loss `config.loss.name` over the global batch. Evaluation embeds every video
and its captions the same way (pooled, `training=False`) and reports
text→video and video→text R@1/5/10 (percent), MedR and MnR
(`vt_keras.metrics.retrieval`).

Losses are entries of `RETRIEVAL_LOSSES`: subclasses of `RetrievalLoss`,
made once per task from the whole config. An entry checks its keys of
`config.loss` when it is made (so a bad setting fails before any training),
creates the variables it owns (CrossCLR's queue) in `build`, which the task
calls in `build_model` inside `strategy.scope()` and checkpoints through
`trackables()`, and returns the loss over the *global* batch (gathering with
`ctx.gather`) when called on the `DualEncoder`'s output dict, the parsed
records and the loop's `StepContext`. A new loss plugs in with
`@RETRIEVAL_LOSSES.register("name")`. With `loss.cka_weight = w > 0` the task
adds `-w · CKA(video, text)` of the pooled embeddings over the global batch
(Yun et al., LREC 2022; `cka(**loss.cka)`) and reports `cka`.

Vocabulary. `prepare_config` (run by `bin/train` before the config is saved)
builds the word vocabulary from the training captions unless
`data.vocabulary` names a file already, and writes it to a content-addressed
file `<cache>/vocabularies/vocabulary-<sha256 prefix>.txt` (`<cache>`:
`$VT_KERAS_CACHE` or `~/.cache/vt_keras`). The config keeps that path and the
vocabulary's digest (`model.vocabulary_sha256`), so `bin/evaluate` and
`bin/export` need only `--workdir` (not the training data), a resume with
another vocabulary is refused as a different model, and a vocabulary file
edited after training is an error rather than silently wrong ids. The
SavedModel export carries the vocabulary itself.

Example:

```python
config = load_config_file("configs/retrieval/info_nce.py")
RetrievalTask.prepare_config(config)
results, model = vt_keras.tasks.train(config, "runs/info_nce")
results["t2v/R@1"]
```
"""
import hashlib
import os

import numpy as np
import tensorflow as tf

from vt_keras.data.cache import default_cache_dir
from vt_keras.data.video_text import data_errors, read_captions, video_text_dataset
from vt_keras.data.video_text_synthetic import DEFAULT_DATASET, ensure_default_video_text_data  # noqa: F401
from vt_keras.errors import ConfigError, DataError
from vt_keras.export_retrieval import export_dual_encoder
from vt_keras.losses.cka import cka
from vt_keras.losses.contrastive import info_nce
from vt_keras.metrics.retrieval import retrieval_metrics
from vt_keras.models.dual_encoder import INPUT_KEYS, DualEncoder
from vt_keras.registry import Registry
from vt_keras.text import build_vocabulary, load_vocabulary, save_vocabulary
from vt_keras.train.checkpoints import track_variables
from vt_keras.train.task import TASKS, Task, fill_default_data

TASK_NAME = "retrieval"
VOCABULARY_DIR = "vocabularies"
RETRIEVAL_LOSSES = Registry("retrieval loss")


class RetrievalLoss:
    """An entry of `RETRIEVAL_LOSSES`: a contrastive loss of the `DualEncoder`'s outputs.

    Args:
        config: the whole config; an entry reads `config.loss` (its section
            named after it) and checks those keys here.

    Call: `loss(outputs, batch, ctx) → scalar`, float32, the loss over the
    global batch (the same on every replica): `outputs` is the
    `DualEncoder`'s dict, `batch` the parsed records, `ctx` the loop's
    `StepContext` (`ctx.gather` gives the global batch).

    Example:

    ```python
    @RETRIEVAL_LOSSES.register("my_loss")
    class MyLoss(RetrievalLoss):
        def __call__(self, outputs, batch, ctx):
            return my_loss(ctx.gather(outputs["video"]), ctx.gather(outputs["text"]))
    ```
    """

    def __init__(self, config):
        self.config = config

    def build(self):
        """Creates the variables the loss owns (called inside `strategy.scope()`).

        Returns:
            A trackable to checkpoint with the run (a `tf.Module`), or None.
        """
        return None

    def __call__(self, outputs, batch, ctx):
        raise NotImplementedError


@RETRIEVAL_LOSSES.register("info_nce")
class InfoNCE(RetrievalLoss):
    """Symmetric InfoNCE (CLIP) of the pooled video and text embeddings: `info_nce(**loss.info_nce)`."""

    def __call__(self, outputs, batch, ctx):
        del batch
        return info_nce(outputs["video"], outputs["text"], gather=ctx.gather, **self.config.loss.info_nce)


def vocabulary_digest(tokens):
    """sha256 (hex) of a vocabulary's tokens, in order."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def prepare_vocabulary(config, cache_dir=None, log=print):
    """Fills `data.vocabulary` (a file) and `model.vocabulary_sha256`; returns the tokens."""
    d = config.data
    if d.vocabulary:
        tokens = load_vocabulary(d.vocabulary)
    else:
        tokens = build_vocabulary(read_captions(d.train_pattern, d.skip_corrupt_records), max_size=d.vocabulary_max_size or None,
                                  min_count=d.vocabulary_min_count)
        if not tokens:
            raise DataError(f"data.train_pattern={d.train_pattern}: no caption word occurs "
                            f"data.vocabulary_min_count={d.vocabulary_min_count} times; "
                            "expected captions to build the vocabulary from")
        directory = os.path.join(cache_dir or default_cache_dir(), VOCABULARY_DIR)
        path = os.path.join(directory, f"vocabulary-{vocabulary_digest(tokens)[:16]}.txt")
        if not tf.io.gfile.exists(path):
            tf.io.gfile.makedirs(directory)
            tmp = f"{path}.{os.getpid()}.tmp"
            save_vocabulary(tokens, tmp)
            tf.io.gfile.rename(tmp, path, overwrite=True)
        d.vocabulary = path
        log(f"vocabulary: {len(tokens)} words from the training captions, {path}")
    config.model.vocabulary_sha256 = vocabulary_digest(tokens)
    return tokens


def records(config, pattern, batch_size, training=False, input_context=None, seed=None, skip_batches=0):
    """The parsed video–text records of `pattern` as `config.data` describes them.

    Training batches are shuffled, repeated and of one size; evaluation
    batches keep the file order and every record. `skip_batches` drops the
    stream's first batches before they are parsed (a resumed run).
    """
    d = config.data
    return video_text_dataset(
        pattern, batch_size, clip_dim=d.clip_dim, max_clips=d.max_clips, clip_encoding=d.clip_encoding,
        shuffle=training, repeat=training, drop_remainder=training, input_context=input_context, seed=seed,
        expert_features=tuple(d.expert_features), shuffle_buffer=d.shuffle_buffer,
        skip_corrupt_records=d.skip_corrupt_records, skip_batches=skip_batches)


@TASKS.register(TASK_NAME)
class RetrievalTask(Task):
    """Text→video and video→text retrieval with a `DualEncoder`."""

    def __init__(self, config):
        super().__init__(config)
        self.loss = _make_loss(config)
        self.loss_state = None  # what self.loss.build() makes, in build_model

    @classmethod
    def prepare_config(cls, config, log=print):
        """Default data for an empty `data.train_pattern`; the loss settings, the records, the vocabulary."""
        d = config.data
        used_default = fill_default_data(d, ensure_default_video_text_data, "embedded default video-text data", log)
        if not d.eval_pattern:
            raise ConfigError("data.eval_pattern is empty; expected the validation files' pattern")
        _make_loss(config)  # a bad loss setting fails before the data is read
        # The loop cannot name a bad training record on one line; check a first batch here.
        with data_errors():
            next(iter(records(config, d.train_pattern, 8)))
        prepare_vocabulary(config, log=log)
        return used_default

    def error_context(self):
        """Video-text records: the data checks' lines plus hints on proto types and damaged files."""
        return data_errors()

    def vocabulary(self):
        """The vocabulary tokens of `data.vocabulary`, checked against the config's digest."""
        d, m = self.config.data, self.config.model
        if not d.vocabulary:
            raise ConfigError("data.vocabulary is empty; expected a vocabulary file (bin/train fills it "
                              "from the training captions via RetrievalTask.prepare_config)")
        tokens = load_vocabulary(d.vocabulary)
        expected = m.vocabulary_sha256
        if expected and vocabulary_digest(tokens) != expected:
            raise DataError(f"vocabulary file {d.vocabulary} changed since training: expected sha256 "
                            f"{expected[:16]}..., found {vocabulary_digest(tokens)[:16]}...")
        return tokens

    def build_model(self):
        model = DualEncoder(self.vocabulary(), clip_dim=self.config.data.clip_dim, name="dual_encoder",
                            **self.config.model.dual_encoder)
        # build_model runs inside strategy.scope(): the loss's own variables (CrossCLR's queue)
        # are made here, and trackables() puts them into checkpoints.
        self.loss_state = self.loss.build()
        # The Transformer blocks live in Python lists: make them reach checkpoints.
        return track_variables(model)

    def dataset(self, pattern, batch_size, training=False, input_context=None, skip_batches=0):
        return records(self.config, pattern, batch_size, training=training, input_context=input_context,
                       seed=self.data_seed, skip_batches=skip_batches)

    def train_dataset(self, input_context, skip_batches=0):
        per_replica = input_context.get_per_replica_batch_size(int(self.config.train.batch_size))
        return self.dataset(self.config.data.train_pattern, per_replica, training=True,
                            input_context=input_context, skip_batches=skip_batches)

    @staticmethod
    def model_inputs(batch):
        return {k: batch[k] for k in INPUT_KEYS}

    # Straight-line graph code: skipping autograph saves seconds of tracing per run.
    @tf.autograph.experimental.do_not_convert
    def loss_fn(self, model, batch, ctx):
        outputs = model(self.model_inputs(batch), training=True)
        lcfg = self.config.loss
        value = tf.cast(self.loss(outputs, batch, ctx), tf.float32)
        metrics = {str(lcfg.name): value}
        if lcfg.cka_weight > 0:
            alignment = cka(ctx.gather(outputs["video"]), ctx.gather(outputs["text"]), **lcfg.cka)
            value = value - lcfg.cka_weight * tf.cast(alignment, tf.float32)
            metrics["cka"] = alignment
        return ctx.global_scalar(value), metrics

    def trackables(self):
        return {} if self.loss_state is None else {"loss_state": self.loss_state}

    def embed(self, model, pattern, batch_size=None):
        """`(ids, video [N, E], text [N, E])` of every record of `pattern`, pooled as in training."""
        batch_size = batch_size or self.config.eval.batch_size

        @tf.function(reduce_retracing=True, autograph=False)
        def forward(batch):
            out = model(self.model_inputs(batch), training=False)
            return out["video"], out["text"]

        ids, videos, texts = [], [], []
        with self.error_context():
            for batch in self.dataset(pattern, batch_size):
                video, text = forward(batch)
                ids.extend(v.decode("utf-8") for v in batch["id"].numpy())
                videos.append(np.asarray(video, np.float32))
                texts.append(np.asarray(text, np.float32))
        return ids, np.concatenate(videos), np.concatenate(texts)

    def embed_sequences(self, model, pattern, batch_size=None):
        """Per-clip and per-caption embeddings of every video of `pattern`, valid rows first.

        What `vt_keras.metrics.alignment` analyses.

        Returns:
            A dict of numpy arrays: `ids` (str), `captions` (lists of the
            valid captions), `caption_index` (their positions in the record),
            `video [V, N, E]`, `text [V, M, E]` (padding rows zero),
            `video_lengths`, `text_lengths [V]`.
        """
        batch_size = batch_size or self.config.eval.batch_size
        keys = ("ids", "captions", "caption_index", "video", "text", "video_lengths", "text_lengths")
        parts = {k: [] for k in keys}
        with self.error_context():
            for batch in self.dataset(pattern, batch_size):
                out = model(self.model_inputs(batch), training=False)
                vmask, tmask = np.asarray(out["video_mask"], bool), np.asarray(out["text_mask"], bool)
                video = np.asarray(out["video_sequence"], np.float32)
                text = np.asarray(out["text_sequence"], np.float32)
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

    def evaluate(self, model, pattern, **kwargs):
        ids, video, text = self.embed(model, pattern)
        results = retrieval_metrics(text, video, block_size=self.config.eval.block_size)
        results["num_videos"] = len(ids)
        return results

    def export(self, model, export_dir):
        return export_dual_encoder(model, export_dir, max_clips=int(self.config.data.max_clips))

    def format_results(self, results, baseline=None):
        del baseline
        n = results.get("num_videos")
        lines = []
        if n:
            lines.append(f"retrieval among {n} videos (chance: R@1 {100.0 / n:.2f}%, MedR {(n + 1) / 2:.1f})")
        lines.append(f"{'':<12}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MedR':>8}{'MnR':>8}")
        for prefix, name in (("t2v", "text→video"), ("v2t", "video→text")):
            if f"{prefix}/R@1" in results:
                values = [results[f"{prefix}/{k}"] for k in ("R@1", "R@5", "R@10", "MedR", "MnR")]
                lines.append(f"{name:<12}" + "".join(f"{v:>8.2f}" for v in values))
        return "\n".join(lines)

    def summary_line(self, metrics):
        keys = ("t2v/R@1", "t2v/R@5", "t2v/MedR", "v2t/R@1", "v2t/R@5", "v2t/MedR")
        return " ".join(f"{k}={metrics[k]:.2f}" for k in keys if k in metrics)


def _make_loss(config):
    """The `RETRIEVAL_LOSSES` entry of `loss.name`, made from the config (which it checks)."""
    if config.loss.cka_weight < 0:
        raise ConfigError(f"loss.cka_weight={config.loss.cka_weight}: expected >= 0 (0 turns CKA off)")
    return RETRIEVAL_LOSSES.get(config.loss.name, key="loss.name")(config)
