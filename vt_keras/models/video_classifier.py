"""The YouTube-8M video classifier, assembled from a config.

`model.aggregator` picks how frames become one vector (`pool`, `netvlad`,
`rnn` for attention clusters, `transformer`) and `model.fusion` how the two
modalities meet:

- `early`: frames of all features concatenated per time step, one aggregator.
- `late`: one aggregator per feature, pooled vectors concatenated.
- `cm_gated` (CM-G): the cross-modal aggregator, the other modality's
  influence multiplied by the frozen correlation tower's probability.
- `cm_concat` (CM-C): the cross-modal aggregator, with the frozen tower's
  embedding concatenated to every frame of each modality.

The pooled vector goes through an optional hidden layer and context gating
into a `MixtureOfExperts` head (the YouTube-8M MoE), optionally followed by
context gating on the class probabilities, as the 2017 winners did.
"""
import keras

from vt_keras.errors import ConfigError
from vt_keras.registry import Registry

AGGREGATORS = Registry("aggregator")
FUSIONS = ("early", "late", "cm_gated", "cm_concat")


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


def build_correlation_tower(model_cfg, name="correlation_tower"):
    from vt_keras.layers.correlation_tower import CorrelationTower

    return CorrelationTower(**_kw(model_cfg, "tower"), name=name)


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
    frames = [inputs[name] for name, _ in features]

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
        tower = build_correlation_tower(model_cfg)
        tower.trainable = False
        tower_out = tower((frames[0], frames[1]), mask=(mask, mask))
        video, audio = frames
        correlation = None
        if fusion == "cm_gated":
            correlation = tower_out["probability"]
        else:
            video = _concat_over_time(video, tower_out["embedding"], max_frames, "video_concat")
            audio = _concat_over_time(audio, tower_out["embedding"], max_frames, "audio_concat")
        pooled = agg.cross(model_cfg, "cross_modal_aggregator")((video, audio), mask=(mask, mask),
                                                                correlation=correlation)

    x = pooled
    hidden = model_cfg.get("hidden_size", 0)
    if hidden:
        x = keras.layers.Dense(hidden, name="hidden")(x)
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


def _concat_over_time(frames, embedding, max_frames, name):
    tiled = keras.layers.RepeatVector(max_frames, name=f"{name}_tile")(embedding)
    return keras.layers.Concatenate(axis=-1, name=name)([frames, keras.ops.cast(tiled, frames.dtype)])
