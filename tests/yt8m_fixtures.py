"""Tiny YouTube-8M-format data and configs for pipeline tests."""
import os

import numpy as np

from tests.overrides import set_keys
from vt_keras.cli.common import load_config_file, load_config_module

TINY_FEATURES = (("rgb", 8), ("audio", 4))
TINY_CLASSES = 5
TINY_FRAMES = 6


def write_tiny_yt8m(directory, num_videos=48, num_files=2, seed=0, prefix="train", features=TINY_FEATURES,
                    num_classes=TINY_CLASSES, max_frames=TINY_FRAMES):
    """Writes frame-level records whose label is readable from the mean rgb frame."""
    from vt_keras.data.yt8m_writers import write_frame_records

    rng = np.random.default_rng(seed)
    protos = rng.uniform(-1.5, 1.5, size=(num_classes, features[0][1]))
    os.makedirs(directory, exist_ok=True)
    paths = []
    per_file = int(np.ceil(num_videos / num_files))
    for f in range(num_files):
        examples = []
        for i in range(f * per_file, min((f + 1) * per_file, num_videos)):
            label = int(rng.integers(num_classes))
            frames = int(rng.integers(2, max_frames + 3))
            ex = {"id": f"{prefix}{i:04d}", "labels": [label]}
            for j, (name, dim) in enumerate(features):
                base = protos[label, :dim] if j == 0 else rng.uniform(-1, 1, dim)
                ex[name] = np.clip(base + 0.3 * rng.normal(size=(frames, dim)), -2, 2)
            examples.append(ex)
        path = os.path.join(directory, f"{prefix}-{f:05d}-of-{num_files:05d}.tfrecord")
        write_frame_records(path, examples)
        paths.append(path)
    return os.path.join(directory, f"{prefix}-*.tfrecord")


# Tiny sizes for whichever aggregator sections a config variant has (by their layers' argument names).
TINY_AGGREGATOR_ARGS = {"num_clusters": 2, "video_clusters": 4, "audio_clusters": 2, "encoder_units": 8,
                        "transform_kernel_size": 3, "num_layers": 1, "num_heads": 2, "key_dim": 4,
                        "intermediate_dim": 8, "dropout": 0.0}
AGGREGATOR_SECTIONS = ("video_aggregator", "audio_aggregator", "early_aggregator", "cross_modal_aggregator")


def tiny_config(train_pattern, eval_pattern=None, config_file="configs/yt8m/late_fusion.py", **overrides):
    """A fast config on the tiny data; `overrides` are dotted keys, e.g. {"train.num_steps": 3}.

    `config_file` may carry the variant, e.g. "configs/yt8m/classifier.py:aggregator=rnn,fusion=cm_gated".
    """
    c = load_config_file(config_file)
    c.data.train_pattern = train_pattern
    c.data.eval_pattern = eval_pattern or train_pattern
    c.data.features = TINY_FEATURES
    c.data.max_frames = TINY_FRAMES
    c.data.num_classes = TINY_CLASSES
    c.data.taxonomy = ""
    m = c.model
    if "hidden_size" in m:
        m.hidden_size = 16
    for section in AGGREGATOR_SECTIONS:
        if section in m:
            for key in m[section]:
                if key in TINY_AGGREGATOR_ARGS:
                    m[section][key] = TINY_AGGREGATOR_ARGS[key]
    if "video_aggregator" in m and "num_clusters" in m.video_aggregator:
        m.video_aggregator.num_clusters = 4  # video and audio sizes differ, as in the real configs
    if "tower" in m:
        m.tower.update(hidden_units=(8, 8), embedding_dim=4)
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.checkpoint_every = 2
    c.train.log_every = 1
    c.eval.batch_size = 16
    c.optimizer.plateau_patience = 0
    set_keys(c, overrides)
    return c


def variant_config_file(name):
    """The `--config` of the classifier variant `<aggregator>_<fusion>`, e.g. "rnn_cm_gated"."""
    aggregator, _, fusion = name.partition("_")
    return f"configs/yt8m/classifier.py:aggregator={aggregator},fusion={fusion}"


def classifier_variants():
    """Every `<aggregator>_<fusion>` that configs/yt8m/classifier.py builds."""
    module = load_config_module("configs/yt8m/classifier.py")
    return [f"{a}_{f}" for a in module.AGGREGATORS for f in module.FUSIONS
            if not (a == "pool" and f.startswith("cm_"))]
