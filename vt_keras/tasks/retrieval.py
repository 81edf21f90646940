"""Video–text retrieval on the one trainer: a `DualEncoder` trained contrastively.

Data: video–text records (docs/video_text_format.md), one per video. Training
pairs each video's pooled clip embedding with its pooled caption embedding
(the L2-normalised mean of its valid captions' embeddings) and minimises the
loss `config.loss.name` over the global batch. Evaluation embeds every video
and its captions the same way (pooled, `training=False`) and reports
text→video and video→text R@1/5/10 (percent), MedR and MnR
(`vt_keras.metrics.retrieval`).

Losses are entries of `RETRIEVAL_LOSSES`. An entry is a function
`(outputs, batch, ctx, loss_config) -> scalar` that returns the loss over the
*global* batch (gathering with `ctx.gather`); `outputs` is the `DualEncoder`'s
output dict, `batch` the parsed records, `ctx` the loop's `StepContext`. A new
loss plugs in with `@RETRIEVAL_LOSSES.register("name")`. An entry with state
(CrossCLR's queue) also has an attribute `make_state(config)`: the task calls
it in `build_model` (inside `strategy.scope()`), passes the result to the
entry as `state=` and checkpoints it through `trackables()`. With
`loss.cka_weight = w > 0` the task adds `-w · CKA(video, text)` of the pooled
embeddings over the global batch (Yun et al., LREC 2022) and reports `cka`.

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
config = get_config()  # configs/retrieval/info_nce.py
RetrievalTask.prepare_config(config)
results, model = vt_keras.train.loop.train(config, "runs/info_nce")
results["t2v/R@1"]
```
"""
import hashlib
import os

import numpy as np
import tensorflow as tf

from vt_keras.data.video_text_synthetic import DEFAULT_DATASET, ensure_default_video_text_data  # noqa: F401
from vt_keras.errors import ConfigError, DataError
from vt_keras.registry import Registry
from vt_keras.train.task import TASKS, Task

TASK_NAME = "retrieval"
VOCABULARY_DIR = "vocabularies"
RETRIEVAL_LOSSES = Registry("retrieval loss")


@RETRIEVAL_LOSSES.register("info_nce")
def info_nce_loss(outputs, batch, ctx, loss_config):
    """Symmetric InfoNCE (CLIP) of the pooled video and text embeddings, global batch."""
    from vt_keras.losses.contrastive import info_nce

    del batch
    return info_nce(outputs["video"], outputs["text"],
                    temperature=float(loss_config.get("temperature", 0.05)), gather=ctx.gather)


def vocabulary_digest(tokens):
    """sha256 (hex) of a vocabulary's tokens, in order."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def prepare_vocabulary(config, cache_dir=None, log=print):
    """Fills `data.vocabulary` (a file) and `model.vocabulary_sha256`; returns the tokens."""
    from vt_keras.data.synthetic import default_cache_dir
    from vt_keras.data.video_text import read_captions
    from vt_keras.text import build_vocabulary, load_vocabulary, save_vocabulary

    d = config.data
    if d.vocabulary:
        tokens = load_vocabulary(d.vocabulary)
    else:
        max_size = int(d.get("vocabulary_max_size", 0)) or None
        tokens = build_vocabulary(read_captions(d.train_pattern), max_size=max_size,
                                  min_count=int(d.get("vocabulary_min_count", 2)))
        if not tokens:
            raise DataError(f"data.train_pattern={d.train_pattern}: no caption word occurs "
                            f"data.vocabulary_min_count={d.get('vocabulary_min_count', 2)} times; "
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


@TASKS.register(TASK_NAME)
class RetrievalTask(Task):
    """Text→video and video→text retrieval with a `DualEncoder`."""

    def __init__(self, config):
        super().__init__(config)
        lcfg = config.loss
        self.loss_entry = RETRIEVAL_LOSSES.get(lcfg.name, key="loss.name")
        self.cka_weight = float(lcfg.get("cka_weight", 0.0))
        self.loss_state = None  # see build_model
        if self.cka_weight < 0:
            raise ConfigError(f"loss.cka_weight={self.cka_weight}: expected >= 0 (0 turns CKA off)")

    @classmethod
    def prepare_config(cls, config, log=print):
        """Default data for an empty `data.train_pattern`; the vocabulary; a check of the records."""
        from vt_keras.data.video_text import data_errors

        from vt_keras.train.task import fill_default_data

        d = config.data
        used_default = fill_default_data(d, ensure_default_video_text_data, "embedded default video-text data", log)
        if not d.eval_pattern:
            raise ConfigError("data.eval_pattern is empty; expected the validation files' pattern")
        # The loop cannot name a bad training record on one line; check a first batch here.
        with data_errors():
            next(iter(cls(config).dataset(d.train_pattern, 8)))
        prepare_vocabulary(config, log=log)
        return used_default

    def error_context(self):
        """Video-text records: the data checks' lines plus hints on proto types and damaged files."""
        from vt_keras.data.video_text import data_errors

        return data_errors()

    def vocabulary(self):
        """The vocabulary tokens of `data.vocabulary`, checked against the config's digest."""
        from vt_keras.text import load_vocabulary

        d, m = self.config.data, self.config.model
        if not d.get("vocabulary", ""):
            raise ConfigError("data.vocabulary is empty; expected a vocabulary file (bin/train fills it "
                              "from the training captions via RetrievalTask.prepare_config)")
        tokens = load_vocabulary(d.vocabulary)
        expected = m.get("vocabulary_sha256", "")
        if expected and vocabulary_digest(tokens) != expected:
            raise DataError(f"vocabulary file {d.vocabulary} changed since training: expected sha256 "
                            f"{expected[:16]}..., found {vocabulary_digest(tokens)[:16]}...")
        return tokens

    def build_model(self):
        from vt_keras.models.dual_encoder import DualEncoder
        from vt_keras.tasks.yt8m import track_weights_by_path

        m = self.config.model
        model = DualEncoder(
            self.vocabulary(), embedding_dim=int(m.embedding_dim), clip_dim=int(self.config.data.clip_dim),
            video_transformer_layers=int(m.video_transformer_layers), text_pooling=m.text_pooling,
            token_embedding_dim=int(m.token_embedding_dim), num_heads=int(m.num_heads),
            max_tokens=int(m.max_tokens), dropout=float(m.dropout), num_oov_buckets=int(m.num_oov_buckets),
            name="dual_encoder")
        model.build()
        # A loss entry with `make_state(config)` owns variables (CrossCLR's queue). build_model runs
        # inside strategy.scope(), so they are made here; loss_fn passes them as `state=` and
        # trackables() puts them into checkpoints.
        make_state = getattr(self.loss_entry, "make_state", None)
        if make_state is not None:
            self.loss_state = make_state(self.config)
        # The Transformer blocks live in Python lists: make them reach checkpoints.
        return track_weights_by_path(model)

    def dataset(self, pattern, batch_size, training=False, input_context=None):
        from vt_keras.data.video_text import video_text_dataset

        d = self.config.data
        return video_text_dataset(
            pattern, batch_size, clip_dim=int(d.clip_dim), max_clips=int(d.max_clips),
            clip_encoding=d.get("clip_encoding", "float"), shuffle=training, repeat=training,
            drop_remainder=training, input_context=input_context, seed=self.data_seed,
            expert_features=tuple(d.get("expert_features", ())),
            shuffle_buffer=int(d.get("shuffle_buffer", 1024)))

    def train_dataset(self, input_context):
        per_replica = input_context.get_per_replica_batch_size(int(self.config.train.batch_size))
        return self.dataset(self.config.data.train_pattern, per_replica, training=True,
                            input_context=input_context)

    @staticmethod
    def model_inputs(batch):
        from vt_keras.models.dual_encoder import INPUT_KEYS

        return {k: batch[k] for k in INPUT_KEYS}

    # Straight-line graph code: skipping autograph saves seconds of tracing per run.
    @tf.autograph.experimental.do_not_convert
    def loss_fn(self, model, batch, ctx):
        outputs = model(self.model_inputs(batch), training=True)
        lcfg = self.config.loss
        extra = {} if self.loss_state is None else {"state": self.loss_state}
        value = tf.cast(self.loss_entry(outputs, batch, ctx, lcfg, **extra), tf.float32)
        metrics = {str(lcfg.name): value}
        if self.cka_weight > 0:
            from vt_keras.losses.cka import cka

            alignment = cka(ctx.gather(outputs["video"]), ctx.gather(outputs["text"]),
                            kernel=lcfg.get("cka_kernel", "linear"), debiased=bool(lcfg.get("cka_debiased", False)))
            value = value - self.cka_weight * tf.cast(alignment, tf.float32)
            metrics["cka"] = alignment
        return ctx.global_scalar(value), metrics

    def trackables(self):
        return {} if self.loss_state is None else {"loss_state": self.loss_state}

    def embed(self, model, pattern, batch_size=None):
        """`(ids, video [N, E], text [N, E])` of every record of `pattern`, pooled as in training."""
        from vt_keras.data.video_text import data_errors

        batch_size = batch_size or int(self.config.get("eval", {}).get("batch_size", 256))

        @tf.function(reduce_retracing=True, autograph=False)
        def forward(batch):
            out = model(self.model_inputs(batch), training=False)
            return out["video"], out["text"]

        ids, videos, texts = [], [], []
        with data_errors():
            for batch in self.dataset(pattern, batch_size):
                video, text = forward(batch)
                ids.extend(v.decode("utf-8") for v in batch["id"].numpy())
                videos.append(np.asarray(video, np.float32))
                texts.append(np.asarray(text, np.float32))
        return ids, np.concatenate(videos), np.concatenate(texts)

    def evaluate(self, model, pattern, **kwargs):
        from vt_keras.metrics.retrieval import retrieval_metrics

        ids, video, text = self.embed(model, pattern)
        block = int(self.config.get("eval", {}).get("block_size", 1024))
        results = retrieval_metrics(text, video, block_size=block)
        results["num_videos"] = len(ids)
        return results

    def export(self, model, export_dir):
        from vt_keras.export_retrieval import export_dual_encoder

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
