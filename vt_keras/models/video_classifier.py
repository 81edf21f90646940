"""The YouTube-8M video classifier, assembled from a config.

`model.aggregator` picks how frames become one vector (`pool`, `netvlad`,
`rnn` for attention clusters, `transformer`) and `model.fusion` how the two
modalities meet:

- `early`: frames of all features concatenated per time step, one aggregator.
- `late`: one aggregator per feature, pooled vectors concatenated.
- `cm_gated` (CM-G): the cross-modal aggregator, the other modality's
  influence multiplied by the frozen correlation tower's probability.
- `cm_concat` (CM-C): the cross-modal aggregator, with the frozen tower's
  transformed *other*-modality signal concatenated to every frame of each
  modality (`model.cm_concat="other"`, the paper's Section 3: audio
  embedding to the video frames, video embedding to the audio frames), or
  both embeddings to both (`"both"`).

The cm_* fusions need trained tower weights: `YT8MClassification.warm_start`
copies them from `model.tower_workdir` into the `correlation_tower` layer,
which is frozen (not trainable, always run with `training=False`).

`model.branch_units > 0` gives each modality a learned frame embedding
(a per-frame dense layer with ReLU) before the fusion, and
`model.cka.weight = λ > 0` puts `vt_keras.layers.CKAAlignment` on those two
embedding sequences (Yun et al.): `-λ · CKA(video, audio)` joins the loss and
`cka` the training scalars. The correlation tower always sees the raw frames.

The pooled vector goes through an optional hidden layer and context gating
into a `MixtureOfExperts` head (the YouTube-8M MoE), optionally followed by
context gating on the class probabilities, as the 2017 winners did.
"""
import keras

from vt_keras.errors import ConfigError
from vt_keras.registry import Registry

AGGREGATORS = Registry("aggregator")
FUSIONS = ("early", "late", "cm_gated", "cm_concat")
CM_CONCAT_MODES = ("other", "both")
TOWER_LAYER = "correlation_tower"
CKA_LAYER = "cka_alignment"


def _kw(model_cfg, name):
    sub = model_cfg.get(name, None)
    return dict(sub) if sub is not None else {}


@AGGREGATORS.register("pool")
class _Pool:
    cross_modal = False

    @staticmethod
    def single(cfg, modality, name):
        from vt_keras.layers.pooling import FramePooling

        return FramePooling(mode=_kw(cfg, "pool").get("mode", "mean_max"), name=name)


@AGGREGATORS.register("netvlad")
class _NetVLAD:
    @staticmethod
    def single(cfg, modality, name):
        from vt_keras.layers.netvlad import NetVLAD

        kw = _kw(cfg, "netvlad")
        clusters = kw.get("video_clusters", 128) if modality == 0 else kw.get("audio_clusters", 64)
        return NetVLAD(num_clusters=clusters, name=name)

    @staticmethod
    def cross(cfg, name):
        from vt_keras.layers.netvlad import CrossModalNetVLAD

        kw = _kw(cfg, "netvlad")
        return CrossModalNetVLAD(video_clusters=kw.get("video_clusters", 128),
                                 audio_clusters=kw.get("audio_clusters", 64), name=name)


@AGGREGATORS.register("rnn")
class _AttentionClusters:
    @staticmethod
    def single(cfg, modality, name):
        from vt_keras.layers.attention_clusters import AttentionClusters

        kw = _kw(cfg, "rnn")
        clusters = kw.get("video_clusters", 8) if modality == 0 else kw.get("audio_clusters", 8)
        return AttentionClusters(num_clusters=clusters, encoder=kw.get("encoder", None),
                                 encoder_units=kw.get("encoder_units", 128), name=name)

    @staticmethod
    def cross(cfg, name):
        from vt_keras.layers.attention_clusters import CrossModalAttentionClusters

        kw = _kw(cfg, "rnn")
        return CrossModalAttentionClusters(
            video_clusters=kw.get("video_clusters", 8), audio_clusters=kw.get("audio_clusters", 8),
            encoder=kw.get("encoder", None), encoder_units=kw.get("encoder_units", 128),
            transform=kw.get("transform", "conv"), transform_kernel_size=kw.get("transform_kernel_size", 5),
            name=name)


@AGGREGATORS.register("transformer")
class _Transformer:
    @staticmethod
    def _args(cfg):
        kw = _kw(cfg, "transformer")
        return dict(num_layers=kw.get("num_layers", 2), num_heads=kw.get("num_heads", 4),
                    key_dim=kw.get("key_dim", 64), intermediate_dim=kw.get("intermediate_dim", 512),
                    dropout=kw.get("dropout", 0.1), pooling=kw.get("pooling", "mean"))

    @classmethod
    def single(cls, cfg, modality, name):
        from vt_keras.layers.cross_modal_attention import TransformerEncoder

        return TransformerEncoder(**cls._args(cfg), name=name)

    @classmethod
    def cross(cls, cfg, name):
        from vt_keras.layers.cross_modal_attention import CrossModalTransformerEncoder

        return CrossModalTransformerEncoder(**cls._args(cfg), name=name)


def build_correlation_tower(model_cfg, frozen=False, name=TOWER_LAYER):
    """The `CorrelationTower` of `model_cfg.tower` (shared by the tower task and the cm_* fusions).

    `frozen=True` gives the classifier's copy: not trainable and without
    dropout. A functional model passes its own `training` flag to every
    layer, so a frozen tower with dropout would still drop units while the
    classifier trains; dropout has no weights, so the trained tower's weights
    load into this copy unchanged.
    """
    from vt_keras.layers.correlation_tower import CorrelationTower

    kw = _kw(model_cfg, "tower")
    if frozen:
        kw["dropout"] = 0.0
    tower = CorrelationTower(**kw, name=name)
    tower.trainable = not frozen
    return tower


def build_tower_model(model_cfg, features, max_frames=None):
    """The correlation tower as a model over two independently masked tracks.

    Args:
        model_cfg: `config.model`; `model_cfg.tower` holds the tower's
            hyperparameters.
        features: `(video_name, dim), (audio_name, dim)`.
        max_frames: the padded time length T (None: any).

    Returns:
        A `keras.Model` taking `{video_name: [B, T, Dv], audio_name: [B, T, Da],
        "video_mask": [B, T], "audio_mask": [B, T]}` and returning the tower's
        dict (`probability` `[B]`, `video_embedding`, `audio_embedding`,
        `embedding`). Separate masks let the audio come from another video.
    """
    if len(features) != 2:
        raise ConfigError(f"the correlation tower needs exactly two features (video, audio); "
                          f"data.features has {len(features)}")
    (video_name, video_dim), (audio_name, audio_dim) = features
    inputs = {video_name: keras.Input((max_frames, video_dim), name=video_name),
              audio_name: keras.Input((max_frames, audio_dim), name=audio_name),
              "video_mask": keras.Input((max_frames,), dtype="bool", name="video_mask"),
              "audio_mask": keras.Input((max_frames,), dtype="bool", name="audio_mask")}
    tower = build_correlation_tower(model_cfg)
    outputs = tower((inputs[video_name], inputs[audio_name]),
                    mask=(inputs["video_mask"], inputs["audio_mask"]))
    return keras.Model(inputs, outputs, name="correlation_tower_model")


def cross_modal_inputs(model_cfg, tower_out, video, audio):
    """What the cross-modal aggregator receives: `(video, audio, correlation)`.

    CM-G passes the frames unchanged and the tower's probability as the gate.
    CM-C concatenates the tower's embeddings to every frame (see the module
    docstring) and passes no gate. Works on symbolic and eager tensors.
    """
    fusion = model_cfg.get("fusion", "late")
    if fusion == "cm_gated":
        return video, audio, tower_out["probability"]
    mode = model_cfg.get("cm_concat", "other")
    if mode not in CM_CONCAT_MODES:
        raise ConfigError(f"model.cm_concat={mode!r} is unknown; expected one of {', '.join(CM_CONCAT_MODES)}")
    if mode == "other":
        to_video, to_audio = tower_out["audio_embedding"], tower_out["video_embedding"]
    else:
        to_video = to_audio = tower_out["embedding"]
    return _concat_over_time(video, to_video), _concat_over_time(audio, to_audio), None


def build_video_classifier(model_cfg, features, num_classes, max_frames):
    """Builds the functional classifier.

    Args:
        model_cfg: the `config.model` ConfigDict (aggregator, fusion, head...).
        features: sequence of `(name, dim)` frame features; the cross-modal
            fusions need exactly two (video first, audio second).
        num_classes: number of output classes.
        max_frames: the padded time length T.

    Returns:
        A `keras.Model` taking `{feature: [B, T, dim], "mask": [B, T] bool}`
        and returning class probabilities `[B, num_classes]`.
    """
    from vt_keras.layers.heads import ContextGating, MixtureOfExperts

    fusion = model_cfg.get("fusion", "late")
    if fusion not in FUSIONS:
        raise ConfigError(f"model.fusion={fusion!r} is unknown; expected one of {', '.join(FUSIONS)}")
    agg = AGGREGATORS.get(model_cfg.get("aggregator", "pool"), key="model.aggregator")
    inputs = {name: keras.Input((max_frames, dim), name=name) for name, dim in features}
    inputs["mask"] = keras.Input((max_frames,), dtype="bool", name="mask")
    mask = inputs["mask"]
    raw = [inputs[name] for name, _ in features]
    frames = _branches(model_cfg, features, raw, mask, fusion)

    if fusion == "early":
        x = frames[0] if len(frames) == 1 else keras.layers.Concatenate(axis=-1)(frames)
        pooled = agg.single(model_cfg, 0, "early_aggregator")(x, mask=mask)
    elif fusion == "late":
        pooled = [agg.single(model_cfg, i, f"{name}_aggregator")(x, mask=mask)
                  for i, ((name, _), x) in enumerate(zip(features, frames))]
        pooled = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(axis=-1)(pooled)
    else:
        if len(frames) != 2:
            raise ConfigError(f"model.fusion={fusion!r} needs exactly two features (video, audio); "
                              f"data.features has {len(frames)}")
        if not hasattr(agg, "cross"):
            raise ConfigError(f"model.aggregator={model_cfg.aggregator!r} has no cross-modal form; "
                              "use netvlad, rnn or transformer with a cm_* fusion")
        tower = build_correlation_tower(model_cfg, frozen=True)
        tower_out = tower((raw[0], raw[1]), mask=(mask, mask))
        video, audio, correlation = cross_modal_inputs(model_cfg, tower_out, frames[0], frames[1])
        pooled = agg.cross(model_cfg, "cross_modal_aggregator")((video, audio), mask=(mask, mask),
                                                                correlation=correlation)

    x = pooled
    hidden = model_cfg.get("hidden_size", 0)
    if hidden:
        # No bias: the batch norm's beta takes its place. A bias before a batch norm has an
        # analytically zero gradient, so Adam would turn float rounding noise into steps.
        x = keras.layers.Dense(hidden, use_bias=False, name="hidden")(x)
        # Synchronized so that N replicas normalise like one device on the global batch.
        x = keras.layers.BatchNormalization(synchronized=True, name="hidden_bn")(x)
        x = keras.layers.ReLU(name="hidden_relu")(x)
    if model_cfg.get("dropout", 0.0):
        x = keras.layers.Dropout(model_cfg.dropout, name="dropout")(x)
    if model_cfg.get("input_context_gating", False):
        x = ContextGating(name="input_context_gating")(x)
    probs = MixtureOfExperts(num_classes, num_mixtures=model_cfg.get("moe_mixtures", 2),
                             l2_penalty=model_cfg.get("moe_l2", 1e-8), name="moe")(x)
    if model_cfg.get("output_context_gating", False):
        probs = ContextGating(name="output_context_gating")(probs)
    return keras.Model(inputs, probs, name=f"{model_cfg.get('aggregator', 'pool')}_{fusion}")


def _branches(model_cfg, features, frames, mask, fusion):
    """Per-modality frame embeddings (`model.branch_units`) and their CKA alignment (`model.cka`)."""
    units = int(model_cfg.get("branch_units", 0) or 0)
    if units < 0:
        raise ConfigError(f"model.branch_units={units}: expected >= 0 (0: the aggregators see the raw frames)")
    if units:
        frames = [keras.layers.Dense(units, activation="relu", name=f"{name}_branch")(x)
                  for (name, _), x in zip(features, frames)]
    cka_cfg = _kw(model_cfg, "cka")
    weight = float(cka_cfg.get("weight", 0.0) or 0.0)
    if weight < 0:
        raise ConfigError(f"model.cka.weight={weight}: expected >= 0 (0 turns CKA alignment off)")
    if weight == 0:
        return frames
    if len(frames) != 2:
        raise ConfigError(f"model.cka aligns two branches (video, audio); data.features has {len(frames)}")
    if not units:
        raise ConfigError("model.cka.weight > 0 aligns the learned frame embeddings of the two branches; "
                          "set model.branch_units (e.g. 256): the raw features have no weights to align")
    from vt_keras.layers.alignment import CKAAlignment

    num_samples = int(cka_cfg.get("num_samples", 0) or 0) or None
    video, audio = CKAAlignment(weight=weight, num_samples=num_samples, kernel=cka_cfg.get("kernel", "linear"),
                                debiased=bool(cka_cfg.get("debiased", False)),
                                rbf_threshold=float(cka_cfg.get("rbf_threshold", 1.0)),
                                name=CKA_LAYER)((frames[0], frames[1]), mask=(mask, mask))
    return [video, audio]


def _concat_over_time(frames, embedding):
    """Appends one per-video vector `[B, E]` to every frame of `[B, T, D]`."""
    steps = keras.ops.shape(frames)[1]
    tiled = keras.ops.repeat(keras.ops.expand_dims(keras.ops.cast(embedding, frames.dtype), 1), steps, axis=1)
    return keras.ops.concatenate([frames, tiled], axis=-1)
