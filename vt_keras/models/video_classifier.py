"""The YouTube-8M video classifier, assembled from `config.model`.

`model.aggregator` picks how frames become one vector and `model.fusion` how
the two modalities meet (configs/yt8m/classifier.py chooses both after the
file name):

- `pool`: masked mean/max (`FramePooling`); `netvlad`: `NetVLAD` /
  `CrossModalNetVLAD`; `transformer`: `TransformerEncoder` /
  `CrossModalTransformerEncoder`.
- `rnn`: the "attention RNN" of Goyal et al. in the attention-cluster form
  of Long et al. that their experiments use (`AttentionClusters` /
  `CrossModalAttentionClusters`). It runs no recurrent layer unless its
  section sets `encoder` to "gru" or "lstm".

- `early`: frames of all features concatenated per time step, one
  aggregator (`model.early_aggregator`).
- `late`: one aggregator per feature (`model.video_aggregator`,
  `model.audio_aggregator`), pooled vectors concatenated.
- `cm_gated` (CM-G): the cross-modal aggregator
  (`model.cross_modal_aggregator`), the other modality's influence
  multiplied by the frozen correlation tower's probability.
- `cm_concat` (CM-C): the cross-modal aggregator, with the frozen tower's
  transformed *other*-modality signal concatenated to the input features of
  every frame of each modality (`model.cm_concat="other"`, the paper's
  Section 3: audio embedding to the video frames, video embedding to the
  audio frames), or both embeddings to both (`"both"`). With a learned
  frame embedding (below) the concatenation is its input, computed in the
  factored form of `FrameEmbedding`: the aggregator's width stays
  `branch_units`, so CM-C costs what CM-G costs. Without one the
  aggregator reads the raw frames with the embedding appended.

Each of those sections holds the constructor arguments of its layer and is
passed on whole (`NetVLAD(**model.video_aggregator)`); the defaults live in
the config file only. The cm_* fusions need trained tower weights:
`YT8MClassification.warm_start` copies them from `model.tower_workdir` into
the `correlation_tower` layer (`CorrelationTower(**model.tower)`), which is
frozen (not trainable, always run with `training=False`).

`model.branch_units > 0` gives each modality a learned frame embedding
(`FrameEmbedding`: a per-frame dense layer with ReLU, named
`<feature>_branch`) before the fusion, and
`model.cka.weight = λ > 0` puts `CKAAlignment(**model.cka)` on those two
embedding sequences (Yun et al.): `alignment_view(model)` returns its
`-λ · CKA(video, audio)` beside the probabilities, the task adds it to the
loss, and `cka` joins the training scalars (under CM-C those embeddings
carry the tower's embedding too). The correlation tower always sees the raw
frames.

The pooled vector goes through an optional hidden layer and context gating
(`ContextGating(**model.context_gating)`) into a
`MixtureOfExperts(num_classes, **model.moe)` head (the YouTube-8M MoE),
optionally followed by context gating on the class probabilities, as the
2017 winners did.

Reference: Goyal et al., "Cross-modal Learning for Multi-modal Video
Categorization", 2020.
"""
import dataclasses

import keras

from vt_keras.errors import ConfigError
from vt_keras.layers.alignment import CKAAlignment
from vt_keras.layers.attention_clusters import AttentionClusters, CrossModalAttentionClusters
from vt_keras.layers.correlation_tower import CorrelationTower
from vt_keras.layers.transformer import CrossModalTransformerEncoder, TransformerEncoder
from vt_keras.layers.frame_embedding import FrameEmbedding
from vt_keras.layers.heads import ContextGating, MixtureOfExperts
from vt_keras.layers.netvlad import CrossModalNetVLAD, NetVLAD
from vt_keras.layers.pooling import FramePooling
from vt_keras.registry import Registry

FUSIONS = ("early", "late", "cm_gated", "cm_concat")
CM_CONCAT_MODES = ("other", "both")
TOWER_LAYER = "correlation_tower"
CKA_LAYER = "cka_alignment"
# The model section each fusion builds its aggregator(s) from.
AGGREGATOR_SECTIONS = {"early": ("early_aggregator",), "late": ("video_aggregator", "audio_aggregator"),
                       "cm_gated": ("cross_modal_aggregator",), "cm_concat": ("cross_modal_aggregator",)}


@dataclasses.dataclass(frozen=True)
class Aggregator:
    """An entry of `AGGREGATORS`: the layer class over one stream and the cross-modal one (None: no such form)."""

    single: type
    cross: type = None


AGGREGATORS = Registry("aggregator")
AGGREGATORS.register("pool")(Aggregator(FramePooling))
AGGREGATORS.register("netvlad")(Aggregator(NetVLAD, CrossModalNetVLAD))
AGGREGATORS.register("rnn")(Aggregator(AttentionClusters, CrossModalAttentionClusters))
AGGREGATORS.register("transformer")(Aggregator(TransformerEncoder, CrossModalTransformerEncoder))


def _section(model_cfg, key):
    """`model_cfg[key]` as keyword arguments; a missing section names the variant that has it."""
    if key not in model_cfg:
        raise ConfigError(f"model.{key} is missing for model.aggregator={model_cfg['aggregator']!r}, "
                          f"model.fusion={model_cfg['fusion']!r}; expected the config of that variant "
                          f"(configs/yt8m/classifier.py:aggregator={model_cfg['aggregator']},fusion={model_cfg['fusion']})")
    return dict(model_cfg[key])


def build_correlation_tower(model_cfg, frozen=False, name=TOWER_LAYER):
    """`CorrelationTower(**model_cfg.tower)` (shared by the tower task and the cm_* fusions).

    `frozen=True` gives the classifier's copy: not trainable and without
    dropout. A functional model passes its own `training` flag to every
    layer, so a frozen tower with dropout would still drop units while the
    classifier trains; dropout has no weights, so the trained tower's weights
    load into this copy unchanged.
    """
    kw = _section(model_cfg, "tower")
    if frozen:
        kw["dropout"] = 0.0
    tower = CorrelationTower(**kw, name=name)
    tower.trainable = not frozen
    return tower


def build_tower_model(model_cfg, features, max_frames=None):
    """The correlation tower as a model over two independently masked tracks.

    Args:
        model_cfg: `config.model`; `model_cfg.tower` holds the
            `CorrelationTower` arguments.
        features: `(video_name, dim), (audio_name, dim)`.
        max_frames: the padded time length T (None: any).

    Returns:
        A `keras.Model` taking `{video_name: [B, T, Dv], audio_name: [B, T, Da],
        "video_mask": [B, T], "audio_mask": [B, T]}` and returning the tower's
        dict (`probability` `[B]`, `video_embedding`, `audio_embedding`,
        `embedding`). Separate masks let the audio come from another video.

    Example:
    >>> model = build_tower_model(config.model, (("rgb", 1024), ("audio", 128)), max_frames=300)
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


def cross_modal_signals(model_cfg, tower_out):
    """What the frozen tower gives a cm_* fusion: `(contexts, correlation)`.

    CM-G: no contexts (`[None, None]`) and the tower's probability as the
    gate. CM-C (`model.cm_concat`, see the module docstring): the per-video
    vectors `[to_video, to_audio]` that join each modality's input features,
    and no gate. Works on symbolic and eager tensors.

    Args:
        model_cfg: `config.model` of a cm_* variant (`fusion`, and
            `cm_concat` for CM-C).
        tower_out: the `CorrelationTower`'s output dict.

    Returns:
        `([video context [B, E] or None, audio context [B, E'] or None],
        correlation [B] or None)`.
    """
    if model_cfg["fusion"] == "cm_gated":
        return [None, None], tower_out["probability"]
    mode = model_cfg["cm_concat"]
    if mode not in CM_CONCAT_MODES:
        raise ConfigError(f"model.cm_concat={mode!r} is unknown; expected one of {', '.join(CM_CONCAT_MODES)}")
    if mode == "other":
        return [tower_out["audio_embedding"], tower_out["video_embedding"]], None
    return [tower_out["embedding"], tower_out["embedding"]], None


def embed_frames(frames, contexts, branches):
    """What the aggregators see, per modality: its frames joined with its context (if any), embedded by its branch (if any).

    With a branch (`FrameEmbedding`, `model.branch_units > 0`) the context
    joins the frames inside the branch's dense layer (its factored form, no
    `[B, T, D + E]` tensor); without one it is concatenated to every frame.

    Args:
        frames: per modality, `[B, T, D]`.
        contexts: per modality, a per-video vector `[B, E]` or None.
        branches: per modality, a `FrameEmbedding` or None.

    Returns:
        A list of `[B, T, D']`, one per modality.
    """
    out = []
    for x, context, branch in zip(frames, contexts, branches):
        if branch is not None:
            x = branch(x, context=context)
        elif context is not None:
            x = _concat_over_time(x, context)
        out.append(x)
    return out


def aggregator_inputs(model, model_cfg, features, inputs):
    """A built classifier's aggregator inputs for a batch, computed with its own layers.

    Args:
        model: a classifier built by `build_video_classifier`.
        model_cfg: its `config.model`.
        features: its `(name, dim)` features.
        inputs: `{feature: [B, T, dim], "mask": [B, T]}`.

    Returns:
        `(frames, correlation, tower_out)`: the list of per-feature frames the
        aggregator(s) read, the CM-G gate `[B]` (else None), and the tower's
        output dict for cm_* models (else None).
    """
    raw, mask = [inputs[name] for name, _ in features], inputs["mask"]
    contexts, correlation, tower_out = [None] * len(raw), None, None
    if model_cfg["fusion"].startswith("cm_"):
        tower_out = model.get_layer(TOWER_LAYER)((raw[0], raw[1]), mask=(mask, mask))
        contexts, correlation = cross_modal_signals(model_cfg, tower_out)
    names = {layer.name for layer in model.layers}
    branches = [model.get_layer(f"{name}_branch") if f"{name}_branch" in names else None for name, _ in features]
    return embed_frames(raw, contexts, branches), correlation, tower_out


def build_video_classifier(model_cfg, features, num_classes, max_frames):
    """Builds the functional classifier of one config variant.

    Args:
        model_cfg: the `config.model` ConfigDict of a
            configs/yt8m/classifier.py variant (switches and the sections of
            the layers it builds; see the module docstring).
        features: sequence of `(name, dim)` frame features; the cross-modal
            fusions need exactly two (video first, audio second).
        num_classes: number of output classes.
        max_frames: the padded time length T.

    Returns:
        A `keras.Model` taking `{feature: [B, T, dim], "mask": [B, T] bool}`
        and returning class probabilities `[B, num_classes]`.

    Example:
    >>> config = load_config_file("configs/yt8m/classifier.py:aggregator=netvlad")
    >>> model = build_video_classifier(config.model, config.data.features, 3862, 300)
    """
    fusion, name = model_cfg["fusion"], model_cfg["aggregator"]
    if fusion not in FUSIONS:
        raise ConfigError(f"model.fusion={fusion!r} is unknown; expected one of {', '.join(FUSIONS)}")
    agg = AGGREGATORS.get(name, key="model.aggregator")
    if fusion.startswith("cm_"):
        if len(features) != 2:
            raise ConfigError(f"model.fusion={fusion!r} needs exactly two features (video, audio); "
                              f"data.features has {len(features)}")
        if agg.cross is None:
            raise ConfigError(f"model.aggregator={name!r} has no cross-modal form; "
                              "use netvlad, rnn or transformer with a cm_* fusion")
    elif fusion == "late" and len(features) > 2:
        raise ConfigError(f"model.fusion='late' has one aggregator per stream (video, audio); "
                          f"data.features has {len(features)}")
    sections = [_section(model_cfg, key) for key in AGGREGATOR_SECTIONS[fusion]]
    inputs = {feature: keras.Input((max_frames, dim), name=feature) for feature, dim in features}
    inputs["mask"] = keras.Input((max_frames,), dtype="bool", name="mask")
    mask = inputs["mask"]
    raw = [inputs[feature] for feature, _ in features]
    contexts, correlation = [None] * len(raw), None
    if fusion.startswith("cm_"):
        # The tower reads the raw frames.
        tower = build_correlation_tower(model_cfg, frozen=True)
        contexts, correlation = cross_modal_signals(model_cfg, tower((raw[0], raw[1]), mask=(mask, mask)))
    frames = _branches(model_cfg, features, raw, mask, contexts)

    if fusion == "early":
        x = frames[0] if len(frames) == 1 else keras.layers.Concatenate(axis=-1)(frames)
        pooled = agg.single(**sections[0], name="early_aggregator")(x, mask=mask)
    elif fusion == "late":
        pooled = [agg.single(**kw, name=f"{feature}_aggregator")(x, mask=mask)
                  for kw, (feature, _), x in zip(sections, features, frames)]
        pooled = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(axis=-1)(pooled)
    else:
        pooled = agg.cross(**sections[0], name="cross_modal_aggregator")((frames[0], frames[1]), mask=(mask, mask),
                                                                          correlation=correlation)

    x = pooled
    if model_cfg["hidden_size"]:
        # No bias: the batch norm's beta takes its place. A bias before a batch norm has an
        # analytically zero gradient, so Adam would turn float rounding noise into steps.
        x = keras.layers.Dense(model_cfg["hidden_size"], use_bias=False, name="hidden")(x)
        # Synchronized so that N replicas normalise like one device on the global batch.
        x = keras.layers.BatchNormalization(synchronized=True, name="hidden_bn")(x)
        x = keras.layers.ReLU(name="hidden_relu")(x)
    if model_cfg["dropout"]:
        x = keras.layers.Dropout(model_cfg["dropout"], name="dropout")(x)
    gating = _section(model_cfg, "context_gating")
    if model_cfg["input_context_gating"]:
        x = ContextGating(**gating, name="input_context_gating")(x)
    probs = MixtureOfExperts(num_classes, **_section(model_cfg, "moe"), name="moe")(x)
    if model_cfg["output_context_gating"]:
        probs = ContextGating(**gating, name="output_context_gating")(probs)
    return keras.Model(inputs, probs, name=f"{name}_{fusion}")


def _branches(model_cfg, features, frames, mask, contexts):
    """Per-modality aggregator inputs (`embed_frames` with new `model.branch_units` branches) and their CKA alignment (`model.cka`)."""
    units = model_cfg["branch_units"]
    if units < 0:
        raise ConfigError(f"model.branch_units={units}: expected >= 0 (0: the aggregators see the raw frames)")
    branches = [FrameEmbedding(units, activation="relu", name=f"{feature}_branch") if units else None
                for feature, _ in features]
    frames = embed_frames(frames, contexts, branches)
    cka = _section(model_cfg, "cka")
    if cka["weight"] < 0:
        raise ConfigError(f"model.cka.weight={cka['weight']}: expected >= 0 (0 turns CKA alignment off)")
    if cka["weight"] == 0:
        return frames
    if len(frames) != 2:
        raise ConfigError(f"model.cka aligns two branches (video, audio); data.features has {len(frames)}")
    if not units:
        raise ConfigError("model.cka.weight > 0 aligns the learned frame embeddings of the two branches; "
                          "set model.branch_units (e.g. 256): the raw features have no weights to align")
    # return_loss: the term is an output, not an add_loss, so that each replica adds its own share
    # (see `alignment_view`); the classifier's own output stays the probabilities.
    video, audio, _ = CKAAlignment(**cka, name=CKA_LAYER)((frames[0], frames[1]), mask=(mask, mask),
                                                          return_loss=True)
    return [video, audio]


def alignment_view(model):
    """A model sharing `model`'s layers that returns `(probabilities, alignment_loss)`, or None without CKA.

    `alignment_loss` is `CKAAlignment`'s `-λ · CKA` of the global batch; a
    training step adds it once over the replicas (`StepContext.global_scalar`).
    """
    try:
        layer = model.get_layer(CKA_LAYER)
    except ValueError:
        return None
    return keras.Model(model.inputs, [model.output, layer.output[2]], name=f"{model.name}_with_alignment")


def _concat_over_time(frames, embedding):
    """Appends one per-video vector `[B, E]` to every frame of `[B, T, D]`."""
    steps = keras.ops.shape(frames)[1]
    tiled = keras.ops.repeat(keras.ops.expand_dims(keras.ops.cast(embedding, frames.dtype), 1), steps, axis=1)
    return keras.ops.concatenate([frames, tiled], axis=-1)
