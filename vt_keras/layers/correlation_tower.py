"""The audio–video correlation tower of Goyal et al., its loss and its metrics."""
import keras
import numpy as np
from keras import ops

from vt_keras.errors import ConfigError, ShapeError, UserError
from vt_keras.layers import checks
from vt_keras.ops import masked_mean


@keras.saving.register_keras_serializable(package="vt_keras")
class CorrelationTower(keras.layers.Layer):
    """Predicts whether a video track and an audio track come from the same video.

    Each modality goes through its own stack of dense layers: ReLU layers of
    `hidden_units` widths, then a linear layer of `embedding_dim` (three
    dense layers by default, the paper's "2-3 fully connected layers").
    Sequences `[B, T, D]` are first mean-pooled over their valid frames.
    The match probability is a sigmoid of a dense layer on
    `[e_v, e_a, e_v ⊙ e_a]`: the towers see one modality each, so a linear
    read-out of `[e_v, e_a]` alone would be `f(v) + g(a)` and could not
    express agreement between them; the product term supplies the
    interaction. The probability is computed and returned in float32.

    Outputs (a dict):
        "probability": `[B]` float32, P(same video). CM-G gates the
            cross-modal term with it.
        "video_embedding", "audio_embedding": `[B, embedding_dim]`, each
            modality's transformed signal. The paper's CM-C concatenates a
            modality's transformed signal to the *other* modality's frames
            (audio_embedding to video frames and vice versa).
        "embedding": `[B, 2·embedding_dim]`, `concat(video_embedding,
            audio_embedding)`: one vector to concatenate to both modalities'
            frames, which contains the other modality's signal for each.

    The paper trains the tower separately with `weighted_binary_crossentropy`
    (positives: both tracks of one video; negatives: video and audio of two
    videos with different top-level labels) and then freezes it.

    Args:
        hidden_units: sequence of ints, widths of the ReLU layers of each
            modality's stack.
        embedding_dim: int E, width of each modality's embedding.
        dropout: float, dropout rate after each hidden layer (training only).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: tuple `(video, audio)`, each `[B, D]` pooled features or
            `[B, T, D]` frames.
        mask: optional `(video_mask, audio_mask)`, bool `[B, T]`, for frames.
        training: bool, dropout mode.

    Example:
        >>> tower = CorrelationTower(hidden_units=(512, 256), embedding_dim=128)
        >>> out = tower((keras.random.normal((4, 1024)), keras.random.normal((4, 128))))
        >>> out["probability"].shape, out["embedding"].shape
        ((4,), (4, 256))

    Reference: Goyal et al., "Cross-modal learning for multi-modal video
    categorization", Section 3.
    """

    def __init__(self, hidden_units=(512, 256), embedding_dim=128, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
        if any(int(u) < 1 for u in units):
            raise ConfigError(
                f"CorrelationTower hidden_units must be positive ints, got {hidden_units}"
            )
        if int(embedding_dim) < 1:
            raise ConfigError(
                f"CorrelationTower embedding_dim must be >= 1, got {embedding_dim}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"CorrelationTower dropout must be in [0, 1), got {dropout}")
        self.hidden_units = hidden_units
        self.embedding_dim = int(embedding_dim)
        self.dropout = float(dropout)
        self._units = tuple(int(u) for u in units)
        self.supports_masking = True

        def stack(prefix):
            layers = [
                keras.layers.Dense(u, activation="relu", dtype=self.dtype_policy,
                                   name=f"{prefix}_hidden_{i}")
                for i, u in enumerate(self._units)
            ]
            layers.append(keras.layers.Dense(self.embedding_dim, dtype=self.dtype_policy,
                                             name=f"{prefix}_embedding"))
            return layers

        self.video_layers = stack("video")
        self.audio_layers = stack("audio")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(1, dtype=self.dtype_policy, name="classifier")

    def build(self, input_shape):
        video_shape, audio_shape = checks.pair_of_shapes(self, input_shape)
        for layers, shape, what in ((self.video_layers, video_shape, "video"),
                                    (self.audio_layers, audio_shape, "audio")):
            dim = checks.tensor_shape(self, shape, what, (2, 3))[-1]
            for layer in layers:
                layer.build((None, dim))
                dim = layer.units
        self.classifier.build((None, 3 * self.embedding_dim))

    def _embed(self, layers, x, mask, training):
        if len(x.shape) == 3:
            x = ops.cast(masked_mean(x, mask), self.compute_dtype)
        for layer in layers[:-1]:
            x = self.dropout_layer(layer(x), training=training)
        return layers[-1](x)

    def call(self, inputs, mask=None, training=None):
        video, audio = inputs
        video_mask, audio_mask = (None, None) if mask is None else mask
        e_v = self._embed(self.video_layers, video, video_mask, training)
        e_a = self._embed(self.audio_layers, audio, audio_mask, training)
        logit = self.classifier(ops.concatenate([e_v, e_a, e_v * e_a], axis=-1))
        probability = ops.sigmoid(ops.cast(logit[:, 0], "float32"))
        return {
            "probability": probability,
            "video_embedding": e_v,
            "audio_embedding": e_a,
            "embedding": ops.concatenate([e_v, e_a], axis=-1),
        }

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=self.hidden_units,
            embedding_dim=self.embedding_dim,
            dropout=self.dropout,
        )
        return config


def weighted_binary_crossentropy(y_true, p, negative_weight=2.0, epsilon=1e-7):
    """Per-example cross-entropy with negatives weighted: `−[y log p + w (1−y) log(1−p)]`.

    Args:
        y_true: `[B]` (or `[B, 1]`) labels, 1 for a matching pair.
        p: predicted probabilities of the same shape, e.g. the tower's
            "probability".
        negative_weight: float w on negative pairs (2 in the paper's Figure 9).
        epsilon: p is clipped to [ε, 1 − ε] before the logs.

    Returns:
        float32 per-example losses `[B]`; reduce them with the trainer's
        `mean_over_global_batch` or `ops.mean`.

    Example:
        >>> weighted_binary_crossentropy([1.0, 0.0], [0.9, 0.2])  # ≈ [0.105, 0.446]
    """
    y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    p = ops.clip(ops.reshape(ops.cast(p, "float32"), (-1,)), epsilon, 1.0 - epsilon)
    return -(y * ops.log(p) + float(negative_weight) * (1.0 - y) * ops.log(1.0 - p))


@keras.saving.register_keras_serializable(package="vt_keras")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """`keras.losses.Loss` form of `weighted_binary_crossentropy`, for `compile()`.

    Args:
        negative_weight: float weight of negative pairs (2 in the paper).
        epsilon: clipping of the probabilities before the logs.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `name`).
    """

    def __init__(self, negative_weight=2.0, epsilon=1e-7, name="weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.negative_weight = float(negative_weight)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        return weighted_binary_crossentropy(y_true, y_pred, self.negative_weight, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(negative_weight=self.negative_weight, epsilon=self.epsilon)
        return config


def correlation_metrics(y_true, p, threshold=0.5):
    """Accuracy, false-positive rate and false-negative rate of the tower.

    A pair is predicted "correlated" when `p >= threshold`. FPR is the share
    of negative pairs predicted correlated, FNR the share of positive pairs
    predicted uncorrelated (the paper reports 92%, 9.6% and 4.1%). A rate
    whose class is absent from `y_true` is NaN.

    Args:
        y_true: array-like `[N]` of 0/1 labels.
        p: array-like `[N]` of probabilities.
        threshold: float decision threshold.

    Returns:
        dict of floats: "accuracy", "false_positive_rate", "false_negative_rate".
    """
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ShapeError(
            f"correlation_metrics: y_true has {y.size} labels but p has {p.size} probabilities"
        )
    if not np.all((y == 0) | (y == 1)):
        raise UserError(
            f"correlation_metrics: y_true must be 0/1 labels, found values {np.unique(y)[:5]}"
        )
    y = y.astype(bool)
    pred = p >= threshold
    negatives, positives = np.sum(~y), np.sum(y)
    return {
        "accuracy": float(np.mean(pred == y)) if y.size else float("nan"),
        "false_positive_rate": float(np.sum(pred & ~y) / negatives) if negatives else float("nan"),
        "false_negative_rate": float(np.sum(~pred & y) / positives) if positives else float("nan"),
    }
