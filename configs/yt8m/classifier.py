r"""YouTube-8M frame-level classifiers (Goyal et al.): one aggregator and one fusion, named after the file.

    bin/train --config=configs/yt8m/classifier.py --workdir=runs/pool_late     # pooled frames, late fusion
    bin/train --config=configs/yt8m/classifier.py:aggregator=netvlad --workdir=runs/netvlad_late
    bin/train --config=configs/yt8m/classifier.py:aggregator=rnn,fusion=cm_gated --workdir=runs/rnn_cm_gated \
        --config.model.tower_workdir=runs/tower     # a tower trained with configs/yt8m/correlation_tower.py

`aggregator=` (how one stream of frames becomes one vector):
- `pool`: masked mean and max over time (`FramePooling`), the default.
- `netvlad`: NetVLAD (`NetVLAD`; cross-modal: `CrossModalNetVLAD`).
- `rnn`: the paper's "attention RNN". As in the paper's experiments it is
  the attention-cluster form of Long et al. (`AttentionClusters`,
  `CrossModalAttentionClusters`): by default NO recurrent layer runs
  (`encoder` is None); set `encoder` to "gru" or "lstm" to run one first.
- `transformer`: Transformer encoders (`TransformerEncoder`,
  `CrossModalTransformerEncoder`).

`fusion=`: `late` (one aggregator per stream, vectors joined; the default),
`early` (frames joined per time step, one aggregator), `cm_gated` (CM-G) and
`cm_concat` (CM-C), the cross-modal aggregators with a frozen correlation
tower, which need `model.tower_workdir`; `pool` has no cross-modal form.

The model section holds the constructor arguments of exactly the layers the
variant builds, under the constructors' names, and the builder
(`vt_keras.models.video_classifier`) passes each section on whole:
`model.video_aggregator` / `model.audio_aggregator` (late fusion),
`model.early_aggregator` (early), `model.cross_modal_aggregator` (cm_*),
`model.tower` (`CorrelationTower`, cm_*), `model.moe` (`MixtureOfExperts`),
`model.context_gating` (`ContextGating`), `model.cka` (`CKAAlignment`). So
`--config.model.video_aggregator.num_clusters=64` is `NetVLAD(num_clusters=64)`
of the video stream, and a key the variant does not build is unknown.

Paper defaults are marked "paper". The embedded default data is small, so the
CPU-friendly sizes here are smaller than the paper's; the comments give the
paper's values.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from vt_keras.cli.common import load_config_module, parse_config_arg
from vt_keras.errors import ConfigError

trainer = load_config_module("../trainer.py", beside=__file__)

AGGREGATORS = ("pool", "netvlad", "rnn", "transformer")  # the first is the default
FUSIONS = ("late", "early", "cm_gated", "cm_concat")
# Cluster (attention unit) counts per stream, shared by the one-stream and the cross-modal layers.
NETVLAD_CLUSTERS = {"video": 32, "audio": 16}  # paper: 128 video, 64 audio
ATTENTION_CLUSTERS = {"video": 8, "audio": 8}


def get_config(arg=None):
    choice = parse_config_arg(arg, __file__, aggregator=AGGREGATORS, fusion=FUSIONS)
    aggregator, fusion = choice["aggregator"], choice["fusion"]
    c = ml_collections.ConfigDict()
    c.task = "yt8m"
    c.seed = 0
    c.data = data_config()
    c.model = model_config(aggregator, fusion)
    c.train = train_config(aggregator)
    c.optimizer = optimizer_config(aggregator)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # videos per inference step
    c.eval.top_k = 20  # GAP@20 as in the YouTube-8M challenge

    c.export = ml_collections.ConfigDict()
    c.export.top_k = 20  # the starter exporter returns the top 20 classes
    return c


def data_config():
    """The frame-level records (shared with configs/yt8m/correlation_tower.py)."""
    d = ml_collections.ConfigDict()
    # Empty train_pattern: the embedded default data (generated once into a cache).
    d.train_pattern = ""
    d.eval_pattern = ""
    d.test_pattern = ""
    d.features = (("rgb", 1024), ("audio", 128))  # video first, audio second
    d.max_frames = 100  # paper: 300 (YouTube-8M's maximum); the default data has at most 100
    d.num_classes = 0  # 0: read from taxonomy.json beside the data; YouTube-8M 2018+: 3862
    d.taxonomy = "auto"  # taxonomy.json for per-level metrics ("auto": beside the eval files)
    d.l2_normalize = False  # starter code: True (normalises each frame's 1152-d vector)
    d.skip_corrupt_records = False  # True: skip corrupt records (and count them) instead of stopping
    # true: examples are the rated (segment, class) pairs of the files, each segment's frames padded
    # to max_frames and weighted to its rated class (docs/yt8m_segments.md).
    d.segment_labels = False
    return d


def tower_config():
    """`CorrelationTower(**model.tower)`: the classifiers' frozen tower must equal the trained one."""
    # Each modality: mean over valid frames, ReLU layers, a linear embedding (the paper's
    # "2-3 fully connected layers"). The cm_* classifiers run it without dropout.
    return dict(hidden_units=(256, 128), embedding_dim=64, dropout=0.0)


def model_config(aggregator, fusion):
    """The model section of one variant: its switches and the arguments of the layers it builds."""
    if fusion.startswith("cm_") and aggregator == "pool":
        raise ConfigError(f"--config=configs/yt8m/classifier.py:aggregator=pool,fusion={fusion}: pooling has no "
                          "cross-modal form; expected aggregator=netvlad, rnn or transformer")
    m = ml_collections.ConfigDict()
    m.aggregator = aggregator  # chosen after the file name (see the docstring)
    m.fusion = fusion
    # Per-modality learned frame embedding (dense + ReLU) before the fusion; 0: none. The
    # Transformers keep their input width through every block, so they get 256: rgb (1024) and
    # audio (128) at one model width, and a much cheaper step than at 1024.
    m.branch_units = 256 if aggregator == "transformer" else 0
    if fusion == "late":
        m.video_aggregator = single_stream(aggregator, "video")
        m.audio_aggregator = single_stream(aggregator, "audio")
    elif fusion == "early":
        # One aggregator over the rgb and audio frames joined per time step: the video stream's sizes.
        m.early_aggregator = single_stream(aggregator, "video")
    else:
        m.cross_modal_aggregator = cross_modal(aggregator)
        m.tower = tower_config()
        m.tower_workdir = ""  # workdir of a trained correlation tower (required)
        if fusion == "cm_concat":
            # other: the audio embedding joins every video frame and the video embedding every
            # audio frame (paper, Section 3); both: the two embeddings join both streams.
            m.cm_concat = "other"
    # The head: optional hidden layer (no bias, synchronized batch norm, ReLU), dropout, context
    # gating, the YouTube-8M mixture of experts, optional context gating of the probabilities.
    m.hidden_size = 512  # 0: none
    m.dropout = 0.0
    m.input_context_gating = True
    m.output_context_gating = False
    m.context_gating = dict(use_batch_norm=False, kernel_initializer="glorot_uniform")  # ContextGating(**), both gates
    m.moe = dict(num_mixtures=2, l2_penalty=1e-8)  # MixtureOfExperts(num_classes, **moe): the starter code's
    # CKAAlignment(**cka) of the two branch embeddings (Yun et al.): adds -weight * CKA to the loss and
    # logs `cka`; weight 0 builds no layer. Needs branch_units > 0. num_samples None: one mean vector
    # per video and branch; N: N valid frames drawn from the global batch (the paper's sampling),
    # paired by position: the same frame of the same video in both branches (one mask for both).
    # Paper: weight 0.05-0.2, after train.cka_warmup_steps steps of CKA alone.
    m.cka = dict(weight=0.0, num_samples=placeholder(int), pairing="position", kernel="linear", debiased=False,
                 rbf_threshold=1.0, seed=placeholder(int))
    # The workdir of a run of this same model whose latest weights this run starts from (e.g. before
    # fine-tuning on rated segments with data.segment_labels); "": from scratch.
    m.init_workdir = ""
    return m


def single_stream(aggregator, stream):
    """Constructor arguments of the one-stream aggregator layer of `stream` ("video" or "audio")."""
    if aggregator == "pool":
        return dict(mode="mean_max")  # FramePooling: mean | max | mean_max
    if aggregator == "netvlad":
        # NetVLAD; output_dim None: the normalised K·D vector, no projection.
        return dict(num_clusters=NETVLAD_CLUSTERS[stream], output_dim=placeholder(int), use_batch_norm=True,
                    epsilon=1e-6)
    if aggregator == "rnn":
        # AttentionClusters: attention units over the frames themselves (encoder None, as in the
        # paper's experiments); "gru" | "lstm" runs that encoder first, with encoder_units units.
        return dict(num_clusters=ATTENTION_CLUSTERS[stream], encoder=placeholder(str), encoder_units=128)
    return transformer()


def cross_modal(aggregator):
    """Constructor arguments of the cross-modal aggregator layer (cm_gated, cm_concat)."""
    if aggregator == "netvlad":
        # CrossModalNetVLAD; transform_units: hidden widths of the assignment transform F (None: one layer);
        # transform_kernel_size: F's width over time (1: per frame, the paper's form; k > 1: convolutions
        # that can follow an event up to k // 2 frames away in the other modality).
        return dict(video_clusters=NETVLAD_CLUSTERS["video"], audio_clusters=NETVLAD_CLUSTERS["audio"],
                    transform_units=placeholder(tuple), output_dim=placeholder(int), use_batch_norm=True,
                    epsilon=1e-6, transform_kernel_size=1)
    if aggregator == "rnn":
        # CrossModalAttentionClusters; transform F over time: conv (kernel transform_kernel_size) | dense.
        return dict(video_clusters=ATTENTION_CLUSTERS["video"], audio_clusters=ATTENTION_CLUSTERS["audio"],
                    encoder=placeholder(str), encoder_units=128, transform="conv", transform_kernel_size=5)
    # CrossModalTransformerEncoder; F over time: separable (a rank-1 kernel on each head's logit map,
    # computed from the queries and keys: a lead or lag of up to transform_kernel_size // 2 frames, at
    # a fraction of the cost) | conv (a full kernel on the map) | dense (a per-head affine map).
    return dict(transformer(), transform="separable", transform_kernel_size=3)


def transformer():
    """`TransformerEncoder` arguments (paper: two cross-modal layers)."""
    return dict(num_layers=2, num_heads=4, key_dim=32, intermediate_dim=256, dropout=0.1, pooling="mean")


def train_config(aggregator="pool"):
    """`config.train`: the trainer's defaults (configs/trainer.py) with the paper's batch noted.

    The Transformers evaluate every 100 steps, so that the plateau schedule of `optimizer_config`
    runs (docs/cross_modal.md: at a constant 1e-3 a third of their runs jumped late in training).
    """
    return trainer.train_config(batch_size=64,  # paper: 128
                                num_steps=1000,  # paper: at most 10 epochs
                                eval_every=100 if aggregator == "transformer" else 0)


def optimizer_config(aggregator="pool"):
    """`config.optimizer`: Adam (paper), the rate lowered on a validation plateau.

    The Transformers train at the paper's 2e-4, lowered after two evaluations without a better
    validation GAP; the other aggregators at 1e-3 (with eval_every 0 the plateau never triggers).
    """
    return trainer.optimizer_config(name="adam",  # paper: Adam
                                    # paper: 2e-4 at batch 128 on YouTube-8M
                                    learning_rate=2e-4 if aggregator == "transformer" else 1e-3,
                                    plateau_monitor="gap",  # paper: lower the rate on a validation plateau ...
                                    plateau_patience=2)  # ... with patience 2 (needs train.eval_every > 0)
