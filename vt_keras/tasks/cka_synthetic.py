"""The CKA synthetic experiment of Yun et al. (LREC 2022, Section 4.1) on the one trainer.

Two encoders, one per synthetic modality (`vt_keras.data.cka_synthetic`),
each three dense layers of width 32 followed by ReLU and batch normalisation,
no weight sharing, are trained so that corresponding pairs have a high cosine
similarity. `config.method` picks the objective:

- `cos_only`: `-mean cos(f_A(a_i), f_B(b_i))`;
- `cka_only`: `-CKA(f_A(A), f_B(B))`, linear CKA over the global batch;
- `cos_cka`: `-mean cos - λ·CKA` (λ = `loss.cka_weight`, paper 0.1), with the
  cosine term multiplied by the trainer's `ctx.main_weight`, so the first
  `train.cka_warmup_steps` steps train CKA alone. `cos_only` has no CKA term
  and ignores the warm-up.

Evaluation embeds the held-out and the training pairs in inference mode and
reports the mean cosine similarity of corresponding pairs (`cosine`,
`train_cosine`), the linear CKA of the two embeddings (`cka`, `train_cka`),
and `cosine_mismatched`, the mean cosine of held-out A with the B of another
pair: the level a model reaches without learning the correspondence.

A config with `sweep = {"key": "method", ...}` trains every method
(`bin/train`); `after_sweep` then reads each run's evaluations from its
TensorBoard `eval/` logs, adds the common initial model at step 0 and writes
`curves.json` and `curves.png` (the paper's Figure 4, right).

Example:
    bin/train --config=configs/cka_synthetic.py --workdir=runs/cka_synthetic
"""
import json
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from vt_keras.data.cka_synthetic import make_pairs, train_dataset
from vt_keras.errors import ConfigError
from vt_keras.losses.cka import cka
from vt_keras.train.checkpoints import track_variables
from vt_keras.train.task import TASKS, Task

METHODS = ("cos_only", "cka_only", "cos_cka")
EVAL_SPLITS = ("", "heldout")
CURVES_JSON = "curves.json"
CURVES_PNG = "curves.png"


def build_encoder(dim, name, hidden_units=(32, 32, 32), bn_momentum=0.9, output_center=True):
    """One modality's encoder: `Dense → ReLU → BatchNormalization` per width in `hidden_units`.

    Batch normalisation is synchronised across replicas, so a multi-replica
    run normalises with the global batch's statistics as one device does.

    Args:
        dim: input dimension.
        name: the model's name (and its layers' prefix).
        hidden_units: widths of the dense layers (paper: three of 32).
        bn_momentum: Keras momentum of the batch norms' moving statistics.
        output_center: keep the learnable shift (β) of the last batch norm.

    Call: `encoder([B, dim]) -> [B, hidden_units[-1]]`.

    Example:
    >>> build_encoder(64, "encoder_a")(np.zeros((4, 64), "float32")).shape
    (4, 32)
    """
    inputs = keras.Input((dim,), name=f"{name}_input")
    x = inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(int(units), name=f"{name}_dense_{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu_{i}")(x)
        last = i == len(hidden_units) - 1
        x = keras.layers.BatchNormalization(momentum=bn_momentum, synchronized=True,
                                            center=output_center or not last, name=f"{name}_bn_{i}")(x)
    return keras.Model(inputs, x, name=name)


def build_encoders(dim, hidden_units=(32, 32, 32), bn_momentum=0.9, output_center=True):
    """The two encoders, no weight sharing, as one model (Yun et al., Section 4.1.1).

    Args: as in `build_encoder`.

    Call: `model({"a": [B, dim], "b": [B, dim]}) -> {"a": [B, H], "b": [B, H]}`,
    H = `hidden_units[-1]`.

    Example:
    >>> out = build_encoders(64)({"a": a, "b": b}, training=False)
    """
    inputs = {key: keras.Input((dim,), name=key) for key in ("a", "b")}
    outputs = {key: build_encoder(dim, f"encoder_{key}", hidden_units, bn_momentum, output_center)(inputs[key])
               for key in ("a", "b")}
    return keras.Model(inputs, outputs, name="cka_synthetic_encoders")


def pair_cosine(x, y, epsilon=1e-12):
    """Cosine similarity of row i of `x` with row i of `y`, in float32 (float64 inputs stay float64).

    Args:
        x: `[N, d]`.
        y: `[N, d]`.
        epsilon: added under the square roots of the norms.

    Returns:
        `[N]` float32 (float64 when both inputs are float64).

    Example:
    >>> pair_cosine(np.eye(2), np.ones((2, 2)))  # ≈ [0.7071, 0.7071]
    """
    x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
    dtype = "float64" if x.dtype == y.dtype == "float64" else "float32"
    x, y = ops.cast(x, dtype), ops.cast(y, dtype)
    # sqrt(Σx² + ε) keeps the gradient finite for an all-zero row.
    norms = ops.sqrt(ops.sum(ops.square(x), axis=-1) + epsilon) * ops.sqrt(ops.sum(ops.square(y), axis=-1) + epsilon)
    return ops.sum(x * y, axis=-1) / norms


# No tensor-dependent Python control flow here or in `cka`: skipping autograph
# saves seconds of tracing at every start of training.
@tf.autograph.experimental.do_not_convert
def method_loss(method, emb_a, emb_b, ctx, cka_weight=0.1):
    """One replica's loss contribution and metrics for `method` (Yun et al., Section 4.1).

    The cosine term is a mean over the global batch; CKA (linear, biased, as
    in the paper) is computed once over the gathered global batch, a global
    scalar (see `vt_keras.train.task`).

    Args:
        method: `"cos_only"`, `"cka_only"` or `"cos_cka"`.
        emb_a: `[B, H]` this replica's embeddings of modality A.
        emb_b: `[B, H]` the embeddings of the corresponding B.
        ctx: the trainer's `StepContext`; `ctx.main_weight` scales the
            cosine term of `cos_cka` (0 during the CKA-only warm-up).
        cka_weight: λ of `cos_cka` (paper: 0.1).

    Returns:
        `(loss, {"cosine": mean cosine of this replica's pairs, "cka": CKA})`.

    Example:
    >>> ctx = StepContext(global_batch_size=512, num_replicas=1, gather=identity_gather)
    >>> loss, metrics = method_loss("cos_cka", emb_a, emb_b, ctx)
    """
    cosine = pair_cosine(emb_a, emb_b)
    alignment = cka(ctx.gather(ops.cast(emb_a, "float32")), ctx.gather(ops.cast(emb_b, "float32")))
    loss = tf.constant(0.0)
    if method in ("cos_only", "cos_cka"):
        weight = ctx.main_weight if method == "cos_cka" else 1.0
        loss = loss + weight * ctx.mean_over_global_batch(-cosine)
    if method == "cka_only":
        loss = loss + ctx.global_scalar(-alignment)
    elif method == "cos_cka":
        loss = loss + ctx.global_scalar(-cka_weight * alignment)
    return loss, {"cosine": ops.mean(cosine), "cka": alignment}


@TASKS.register("cka_synthetic")
class CKASynthetic(Task):
    """Cosine-similarity learning between two synthetic modalities, with or without CKA."""

    def __init__(self, config):
        super().__init__(config)
        if config.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}; got {config.method!r}")
        self.method = config.method
        self._forward = None  # (model, its inference tf.function), see embed

    def pairs(self):
        d = self.config.data
        return make_pairs(num_train=d.num_train, num_heldout=d.num_heldout, dim=d.dim,
                          num_components=d.num_components, pairing=d.pairing, seed=d.seed)

    def build_model(self):
        """`build_encoders(data.dim, **model)`."""
        return track_variables(build_encoders(self.config.data.dim, **self.config.model))

    def train_dataset(self, input_context, skip_batches=0):
        per_replica = input_context.get_per_replica_batch_size(int(self.config.train.batch_size))
        # In-memory pairs: skipping costs no parsing.
        return train_dataset(self.pairs()["train"], per_replica, seed=self.data_seed,
                             input_context=input_context).skip(skip_batches)

    @tf.autograph.experimental.do_not_convert
    def loss_fn(self, model, batch, ctx):
        out = model({"a": batch["a"], "b": batch["b"]}, training=True)
        return method_loss(self.method, out["a"], out["b"], ctx, self.config.loss.cka_weight)

    def embed(self, model, samples):
        """`(emb_a, emb_b)` numpy float64 embeddings of `samples` in inference mode."""
        if self._forward is None or self._forward[0] is not model:
            spec = tf.TensorSpec([None, self.config.data.dim], tf.float32)
            self._forward = (model, tf.function(lambda a, b: model({"a": a, "b": b}, training=False),
                                                input_signature=(spec, spec)))
        forward, size = self._forward[1], self.config.eval.batch_size
        parts = [forward(samples.a[i:i + size], samples.b[i:i + size]) for i in range(0, len(samples.a), size)]
        return tuple(np.concatenate([np.asarray(p[key], np.float64) for p in parts]) for key in ("a", "b"))

    def evaluate(self, model, pattern="", **kwargs):
        """Cosine and linear CKA on the held-out pairs (and on the training pairs), in float64."""
        if pattern not in EVAL_SPLITS:
            raise ConfigError(f"cka_synthetic generates its pairs in memory: data.eval_pattern must be 'heldout' "
                              f"(or empty); got {pattern!r}")
        pairs = self.pairs()
        results = {}
        for prefix, split in (("", "heldout"), ("train_", "train")):
            emb_a, emb_b = self.embed(model, pairs[split])
            results[f"{prefix}cosine"] = float(ops.mean(pair_cosine(emb_a, emb_b)))
            results[f"{prefix}cka"] = float(cka(emb_a, emb_b))  # linear, biased, in float64
            if split == "heldout":
                # Another pair's B: the chance level of the cosine.
                results["cosine_mismatched"] = float(ops.mean(pair_cosine(emb_a, np.roll(emb_b, 1, axis=0))))
        return results

    def export(self, model, export_dir):
        """A SavedModel whose `serving_default` maps `{"a", "b"}` to both embeddings."""
        model.export(export_dir, format="tf_saved_model", verbose=False)
        return export_dir

    def initial_model(self):
        """The untrained model the trainer starts from with `config.seed` (the same for every method)."""
        keras.utils.set_random_seed(int(self.config.seed))
        return self.build_model()

    def after_sweep(self, workdir, results):
        """Writes `curves.json` and `curves.png` from the runs' evaluation logs."""
        start = self.evaluate(self.initial_model(), "heldout")
        curves = {}
        for method in results:
            scalars = read_eval_scalars(os.path.join(workdir, method, "eval"))
            steps = sorted(scalars.get("eval/cosine", {}))
            curves[method] = {"step": [0] + steps}
            for key in ("cosine", "cka", "train_cosine", "train_cka", "cosine_mismatched"):
                curves[method][key] = [start[key]] + [scalars[f"eval/{key}"][s] for s in steps]
        with open(os.path.join(workdir, CURVES_JSON), "w") as f:
            json.dump(curves, f, indent=1, sort_keys=True)
        plot_curves(curves, os.path.join(workdir, CURVES_PNG), warmup_steps=self.config.train.cka_warmup_steps,
                    cka_weight=self.config.loss.cka_weight, pairing=self.config.data.pairing)
        return curves

    def summary_line(self, metrics):
        keys = ("cosine", "cka", "cosine_mismatched", "train_cosine", "train_cka")
        return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def read_eval_scalars(logdir):
    """`{tag: {step: value}}` of every scalar in the TensorBoard event files of `logdir`.

    Files are read in name (creation) order, so a resumed run's later value
    for a step replaces the earlier one.
    """
    scalars = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, {})[int(event.step)] = number
    return scalars


LABELS = {"cos_only": "cosine only", "cka_only": "CKA only", "cos_cka": "cosine + λ·CKA"}


def plot_curves(curves, path, warmup_steps=0, cka_weight=0.1, pairing="structured"):
    """Figure 4 (right) of Yun et al.: mean cosine (top) and CKA (bottom) against steps, one line per method.

    Solid lines: held-out pairs; dashed: training pairs; dotted (top): held-out
    A with another pair's B, the level reached without the correspondence.
    """
    # Imported here: every binary imports the tasks, and only this plot needs matplotlib.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7.0, 6.5), sharex=True)
    colors = {"cos_only": "tab:blue", "cka_only": "tab:orange", "cos_cka": "tab:green"}
    for method, c in curves.items():
        label = LABELS.get(method, method)
        if method == "cos_cka":
            label = f"cosine + {cka_weight:g}·CKA" + (f" ({warmup_steps} CKA-only steps first)" if warmup_steps else "")
        color = colors.get(method)
        for ax, key in zip(axes, ("cosine", "cka")):
            ax.plot(c["step"], c[key], color=color, lw=2.0, label=label)
            ax.plot(c["step"], c[f"train_{key}"], color=color, lw=1.0, ls="--", alpha=0.7)
        axes[0].plot(c["step"], c["cosine_mismatched"], color=color, lw=1.0, ls=":")
    if warmup_steps and "cos_cka" in curves:
        for ax in axes:
            ax.axvline(warmup_steps, color="0.6", lw=0.8, ls=":")
    held = "held-out pairs" if pairing == "structured" else "held-out pairs (random pairing: chance only)"
    axes[0].set_ylabel("mean cosine similarity")
    # Two lines: the random pairing's note makes one line wider than the figure.
    axes[0].set_title(f"solid: {held}\ndashed: training pairs, dotted: mismatched pairs", fontsize=9)
    axes[1].set_ylabel("linear CKA")
    axes[1].set_xlabel("training step")
    axes[0].legend(loc="lower right", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
