"""Tiny video-level records, tiny segment-rated frame-level records, and the video-level configs on them."""
import os

import numpy as np

from tests.overrides import set_keys
from vt_keras.cli.common import load_config_file

TINY_VIDEO_FEATURES = (("mean_rgb", 8), ("mean_audio", 4))
TINY_FRAME_FEATURES = (("rgb", 8), ("audio", 4))
TINY_CLASSES = 5
RATED_FRAMES = 20  # frames read per rated video (data.max_frames)


def write_tiny_video_level(directory, num_videos=48, num_files=2, seed=0, prefix="train"):
    """Video-level records whose label is readable from `mean_rgb`; returns their pattern."""
    from vt_keras.data.yt8m_writers import write_video_records

    rng = np.random.default_rng(seed)
    # The class prototypes are shared by every split; `seed` draws the videos.
    protos = np.random.default_rng(100).uniform(-1.5, 1.5, size=(TINY_CLASSES, TINY_VIDEO_FEATURES[0][1]))
    os.makedirs(directory, exist_ok=True)
    per_file = int(np.ceil(num_videos / num_files))
    for f in range(num_files):
        examples = []
        for i in range(f * per_file, min((f + 1) * per_file, num_videos)):
            label = int(rng.integers(TINY_CLASSES))
            examples.append({"id": f"{prefix}{i:04d}", "labels": [label],
                             "mean_rgb": protos[label] + 0.3 * rng.normal(size=TINY_VIDEO_FEATURES[0][1]),
                             "mean_audio": rng.uniform(-1, 1, TINY_VIDEO_FEATURES[1][1])})
        write_video_records(os.path.join(directory, f"{prefix}-{f:05d}-of-{num_files:05d}.tfrecord"), examples)
    return os.path.join(directory, f"{prefix}-*.tfrecord")


def write_tiny_rated(directory, num_videos=12, seed=0, prefix="validate"):
    """Frame-level records with segment ratings: class c is present in a segment when its frames hold
    prototype c; each video rates its complete segments for its class and one other class."""
    from vt_keras.data.yt8m_writers import write_frame_records

    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(100).uniform(-1.5, 1.5, size=(TINY_CLASSES, TINY_FRAME_FEATURES[0][1]))
    os.makedirs(directory, exist_ok=True)
    examples = []
    for i in range(num_videos):
        frames = int(rng.integers(7, RATED_FRAMES + 1))
        label, other = rng.choice(TINY_CLASSES, 2, replace=False)
        rgb = rng.uniform(-1, 1, (frames, TINY_FRAME_FEATURES[0][1]))
        starts = list(range(0, frames - 4, 5))
        present = rng.random(len(starts)) < 0.5
        for start, here in zip(starts, present):
            if here:
                rgb[start:start + 5] = np.clip(protos[label] + 0.2 * rng.normal(size=(5, rgb.shape[1])), -2, 2)
        examples.append({"id": f"{prefix}{i:03d}", "labels": [int(label)], "rgb": rgb,
                         "audio": rng.uniform(-1, 1, (frames, TINY_FRAME_FEATURES[1][1])),
                         "segment_start_times": starts + starts[:1],
                         "segment_labels": [int(label)] * len(starts) + [int(other)],
                         "segment_scores": [float(p) for p in present] + [0.0]})
    path = os.path.join(directory, f"{prefix}-00000-of-00001.tfrecord")
    write_frame_records(path, examples)
    return path


def tiny_video_config(train_pattern, eval_pattern=None, config_file="configs/yt8m/video_moe.py", **overrides):
    """A fast video-level config on the tiny data; `overrides` are dotted keys, e.g. {"train.num_steps": 3}."""
    c = load_config_file(config_file)
    c.data.train_pattern = train_pattern
    c.data.eval_pattern = eval_pattern or train_pattern
    c.data.features = TINY_VIDEO_FEATURES
    c.data.num_classes = TINY_CLASSES
    c.data.taxonomy = ""
    c.data.max_frames = RATED_FRAMES
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.checkpoint_every = 2
    c.train.log_every = 1
    c.eval.batch_size = 16
    c.optimizer.learning_rate = 0.01
    set_keys(c, overrides)
    return c
