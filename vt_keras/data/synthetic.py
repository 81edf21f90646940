"""Synthetic YouTube-8M-style frame-level data with planted structure.

`make_yt8m_data` writes `train-XXXXX-of-XXXXX.tfrecord`, `validate-...` and
`test-...` (frame-level records in the YouTube-8M format, features `rgb` and
`audio`), `taxonomy.json` (see `vt_keras.data.taxonomy`) and `manifest.json`;
with `video_level`, the same videos as video-level records in `video/`
(`mean_rgb`, `mean_audio`: the mean of each video's dequantized frames, as
the released video-level features are built; `video/taxonomy.json` beside
them); with `segment_ratings`, the validation and test records carry the
2019 challenge's segment ratings, and `segment_classes.csv` lists the rated
classes (the leaves) like the starter code's `segment_label_ids.csv`.

The planted structure:
- Labels. A taxonomy of `taxonomy_shape` (default 4 top-level categories,
  3 children each, then 2 and 2: levels 0 to 3, 88 classes). Each video gets
  a leaf (leaves have skewed frequencies) and all its ancestors as labels;
  a `second_label_fraction` of videos also get a second leaf and its ancestors.
- Appearance. Every class has a visual and an audio code in a low-rank space
  (`rank`); a leaf's prototype mixes the codes along its path, coarse levels
  weighted most, so coarse categories show in every frame and fine ones less.
  Every frame is the prototype plus a per-video nuisance in the same space
  plus i.i.d. uniform noise of std `noise`, scaled to stay mostly within [-2, 2] before
  quantization.
- Events. A few frames carry a leaf-specific visual event; the matching audio
  event happens `audio_offset` frames later (negative: earlier), |offset| <=
  `max_offset`, one offset per video. Fine classes show mostly through these
  events, which mean pooling dilutes and cross-modal models can align.
- Uncorrelated audio. Exactly `round(uncorrelated_fraction * num_videos)`
  videos get the audio track of a video of a different top-level category
  (prototype, nuisance and events of a donor leaf at unrelated times); the
  manifest flags them, the ground truth of the correlation tower.

- Segment ratings (validation and test videos). Segments are the complete
  non-overlapping 5-frame windows (starts 0, 5, ...). For each leaf of a
  video, every segment holding one of that leaf's visual events is rated
  present (1.0), and up to `negative_segments` segments without them absent
  (0.0); each video also gets absent ratings for one leaf it does not have.
  The events are local and leaf-specific while the prototype is everywhere,
  so a model that finds events localises the leaf classes in time, and a
  baseline that gives every segment its video's score cannot.

The manifest lists per video its split, frame count, labels, leaves, top
category, `uncorrelated_audio`, `audio_offset`, the frames of its visual
events (`event_frames`), for uncorrelated audio the donor leaf, and for
rated videos its ratings (`segments`: `[start, class, score]` triples).

Nothing in a record but the features reveals its labels: ids are random.
Everything is drawn from `seed`: the same arguments give byte-identical files.
"""
import json
import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vt_keras.data.cache import default_cache_dir, ensure_cached  # noqa: F401  (default_cache_dir: public here too)
from vt_keras.data.quantization import dequantize, quantize
from vt_keras.data.taxonomy import Taxonomy
from vt_keras.data.yt8m_fields import SEGMENT_FRAMES
from vt_keras.data.yt8m_writers import FrameExampleWriter, VideoExampleWriter
from vt_keras.errors import ConfigError

MANIFEST_FORMAT = "vt_keras.yt8m_synthetic"
DEFAULT_DATASET = "yt8m_synthetic_v1"
# Bump when a change to this file changes what a seed generates: cached
# default datasets of another generator are then rebuilt. 3: video-level
# files and segment ratings (the frame-level features are those of 2).
GENERATOR = 3
SPLITS = ("train", "validate", "test")
RATED_SPLITS = ("validate", "test")
VIDEO_LEVEL_DIR = "video"
# Unit-variance AR(1) kernel (rho = 0.8), oldest frame first.
_DRIFT_KERNEL = (0.8 ** np.arange(15, -1, -1)).astype(np.float32)
_DRIFT_KERNEL /= np.sqrt(np.sum(np.square(_DRIFT_KERNEL)))
_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def _check_args(num_videos, num_shards, splits, min_frames, max_frames, uncorrelated_fraction, max_offset,
                taxonomy_shape):
    if len(splits) != 3 or min(splits) < 0 or not np.isclose(sum(splits), 1.0):
        raise ConfigError(f"splits: expected 3 non-negative fractions summing to 1, found {tuple(splits)}")
    if num_videos < 1 or num_shards < 1:
        raise ConfigError(f"num_videos and num_shards: expected >= 1, found {num_videos} and {num_shards}")
    if not 1 <= min_frames <= max_frames:
        raise ConfigError(f"frames: expected 1 <= min_frames <= max_frames, found {min_frames} and {max_frames}")
    if not 0 <= max_offset < min_frames:
        raise ConfigError(f"max_offset: expected 0 <= max_offset < min_frames={min_frames}, found {max_offset}")
    if not 0.0 <= uncorrelated_fraction <= 1.0:
        raise ConfigError(f"uncorrelated_fraction: expected a value in [0, 1], found {uncorrelated_fraction}")
    if not taxonomy_shape:
        raise ConfigError("taxonomy_shape: expected branch counts per level, found ()")
    if taxonomy_shape[0] < 2 and uncorrelated_fraction > 0:
        raise ConfigError(f"taxonomy_shape: uncorrelated audio needs >= 2 top-level categories, found {taxonomy_shape}")


class _Modality:
    """Prototypes and event patterns of one modality in a low-rank space."""

    def __init__(self, rng, taxonomy, leaves, dim, rank, level_weights):
        self.dim = dim
        basis = rng.standard_normal((rank, dim)) / np.sqrt(rank)
        codes = rng.standard_normal((taxonomy.num_classes, rank))
        paths = [[leaf] + taxonomy.ancestors(leaf) for leaf in leaves]
        weights = np.asarray(level_weights, np.float64)
        mixed = np.stack([sum(weights[taxonomy.classes[c].level] * codes[c] for c in p) for p in paths])
        mixed /= np.sqrt(np.sum(np.square(weights[: len(paths[0])])))
        self.basis = basis.astype(np.float32)
        self.prototypes = np.einsum("lr,rd->ld", mixed, basis).astype(np.float32)
        self.events = np.einsum("lr,rd->ld", rng.standard_normal((len(leaves), rank)), basis).astype(np.float32)

    def track(self, rng, num_frames, leaf_rows, leaf_weights, event_times, scales):
        """Frames `[num_frames, dim]`: prototype + nuisance + drift + noise + events."""
        proto_scale, nuisance_scale, drift_scale, event_scale, noise = scales
        rank = self.basis.shape[0]
        base = sum(w * self.prototypes[r] for r, w in zip(leaf_rows, leaf_weights)) * proto_scale
        # A per-video nuisance and a slow AR(1) drift, both in the class code
        # space: pooling cannot average them away and single frames are
        # ambiguous, so events must be told from drift.
        # The drift is white noise filtered by a truncated AR(1) kernel.
        white = rng.standard_normal((num_frames + len(_DRIFT_KERNEL) - 1, rank)).astype(np.float32)
        drift = np.einsum("trk,k->tr", sliding_window_view(white, len(_DRIFT_KERNEL), axis=0), _DRIFT_KERNEL)
        codes = drift_scale * drift + nuisance_scale * rng.standard_normal(rank).astype(np.float32)
        # einsum, not BLAS: tiny products where BLAS threads only add overhead.
        base = base + np.einsum("tr,rd->td", codes, self.basis)
        # Uniform noise of std `noise`: a Gaussian draw took most of the generation time.
        frames = rng.random((num_frames, self.dim), dtype=np.float32)
        frames -= np.float32(0.5)
        frames *= np.float32(noise * np.sqrt(12.0))
        frames += base
        for r, times in zip(leaf_rows, event_times):
            frames[times] += event_scale * self.events[r]
        return frames


def make_yt8m_data(output_dir, num_videos=2000, seed=0, num_shards=4, splits=(0.8, 0.1, 0.1), min_frames=20,
                   max_frames=100, uncorrelated_fraction=0.1, rgb_dim=1024, audio_dim=128,
                   taxonomy_shape=(4, 3, 2, 2), max_offset=3, noise=0.5, second_label_fraction=0.2,
                   events_per_video=(2, 4), rank=16, level_weights=(1.0, 0.6, 0.4, 0.3), class_skew=0.8,
                   prototype_scale=0.35, nuisance_scale=0.25, drift_scale=0.25, event_scale=0.25,
                   video_level=True, segment_ratings=True, negative_segments=2):
    """Writes a synthetic YouTube-8M dataset with planted structure; returns the manifest dict.

    Args:
        output_dir: directory to write into (created if needed).
        num_videos, seed, num_shards: videos in all, random seed, files per split.
        splits: fractions of train, validate and test.
        min_frames, max_frames: frame count range (uniform) of a video.
        uncorrelated_fraction: fraction of videos whose audio comes from
            another top-level category.
        rgb_dim, audio_dim: feature sizes of `rgb` and `audio`.
        taxonomy_shape: branch counts per level of the label taxonomy.
        max_offset: largest |audio offset| of events, in frames.
        noise: std of the i.i.d. per-frame noise.
        second_label_fraction: fraction of videos with a second leaf.
        events_per_video: (min, max) events per leaf of a video.
        rank: dimension of the low-rank code space of each modality.
        level_weights: weight of each taxonomy level in a prototype.
        class_skew: leaf frequencies fall as rank ** -class_skew.
        prototype_scale, nuisance_scale, drift_scale, event_scale: amplitudes
            of the class prototype, the per-video nuisance, the per-frame
            drift and the events.
        video_level: also write the video-level records in `video/`.
        segment_ratings: rate segments of the validation and test videos.
        negative_segments: absent-rated segments per rated class of a video.

    Example:
        >>> make_yt8m_data("/data/yt8m_synth", num_videos=200, seed=1)["counts"]
        {'train': 160, 'validate': 20, 'test': 20}
    """
    taxonomy_shape = tuple(int(s) for s in taxonomy_shape)
    _check_args(num_videos, num_shards, splits, min_frames, max_frames, uncorrelated_fraction, max_offset,
                taxonomy_shape)
    if len(level_weights) < len(taxonomy_shape):
        raise ConfigError(f"level_weights: expected {len(taxonomy_shape)} weights, found {len(level_weights)}")
    taxonomy = Taxonomy.from_shape(taxonomy_shape)
    leaves = np.array(taxonomy.leaves())
    roots = np.array([taxonomy.root(int(c)) for c in leaves])
    rng = np.random.default_rng([seed, 0])
    visual = _Modality(rng, taxonomy, leaves, rgb_dim, rank, level_weights)
    audio = _Modality(rng, taxonomy, leaves, audio_dim, rank, level_weights)
    prior = rng.permutation(np.arange(1, len(leaves) + 1) ** -float(class_skew))
    prior /= prior.sum()
    uncorrelated = np.zeros(num_videos, bool)
    uncorrelated[rng.permutation(num_videos)[: int(round(uncorrelated_fraction * num_videos))]] = True
    counts = np.floor(np.asarray(splits) * num_videos + 1e-9).astype(int)
    counts[0] += num_videos - counts.sum()
    split_of = np.repeat(np.arange(3), counts)
    ids = _random_ids(rng, num_videos)
    scales_v = (prototype_scale, nuisance_scale, drift_scale, event_scale, noise)

    os.makedirs(output_dir, exist_ok=True)
    if video_level:
        os.makedirs(os.path.join(output_dir, VIDEO_LEVEL_DIR), exist_ok=True)
    writers, video_writers, files = {}, {}, {s: [] for s in SPLITS}
    for k, split in enumerate(SPLITS):
        for shard in range(num_shards if counts[k] else 0):
            name = f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
            files[split].append(name)
            writers[(k, shard)] = FrameExampleWriter(os.path.join(output_dir, name))
            if video_level:
                video_writers[(k, shard)] = VideoExampleWriter(os.path.join(output_dir, VIDEO_LEVEL_DIR, name))
    shard_of = np.concatenate([np.arange(c) * num_shards // max(c, 1) for c in counts]).astype(int)
    videos = []
    try:
        for i in range(num_videos):
            v = np.random.default_rng([seed, 1, i])
            num_frames = int(v.integers(min_frames, max_frames + 1))
            rows = [int(v.choice(len(leaves), p=prior))]
            if v.random() < second_label_fraction:
                rows.append(int(v.choice(np.delete(np.arange(len(leaves)), rows[0]))))
            weights = [1.0, 0.7][: len(rows)]
            offset = int(v.integers(-max_offset, max_offset + 1))
            n_events = [int(v.integers(events_per_video[0], events_per_video[1] + 1)) for _ in rows]
            lo, hi = max(0, -offset), num_frames - max(0, offset)
            times = [v.choice(np.arange(lo, hi), min(n, hi - lo), replace=False) for n in n_events]
            rgb = visual.track(v, num_frames, rows, weights, times, scales_v)
            if uncorrelated[i]:
                donor = int(v.choice(np.flatnonzero(roots != roots[rows[0]])))
                donor_times = [v.choice(num_frames, min(n_events[0], num_frames), replace=False)]
                snd = audio.track(v, num_frames, [donor], [1.0], donor_times, scales_v)
            else:
                snd = audio.track(v, num_frames, rows, weights, [t + offset for t in times], scales_v)
            labels = sorted({int(c) for r in rows for c in [leaves[r]] + taxonomy.ancestors(int(leaves[r]))})
            example = {"id": ids[i], "labels": labels, "rgb": quantize(rgb), "audio": quantize(snd)}
            video = {
                "id": ids[i], "split": SPLITS[split_of[i]], "num_frames": num_frames, "labels": labels,
                "leaves": [int(leaves[r]) for r in rows], "top_category": int(roots[rows[0]]),
                "uncorrelated_audio": bool(uncorrelated[i]),
                "audio_offset": None if uncorrelated[i] else offset,
                "event_frames": sorted({int(t) for ts in times for t in ts}),
                "audio_source_leaf": int(leaves[donor]) if uncorrelated[i] else None,
            }
            if segment_ratings and SPLITS[split_of[i]] in RATED_SPLITS:
                # Its own stream: the frames stay those of a generator without ratings.
                ratings = _rate_segments(np.random.default_rng([seed, 2, i]), num_frames,
                                         [int(leaves[r]) for r in rows], times, [int(c) for c in leaves],
                                         negative_segments)
                video["segments"] = ratings
                example.update(segment_start_times=[r[0] for r in ratings], segment_labels=[r[1] for r in ratings],
                               segment_scores=[r[2] for r in ratings])
            writers[(split_of[i], shard_of[i])].write(example)
            if video_level:
                video_writers[(split_of[i], shard_of[i])].write({
                    "id": ids[i], "labels": labels, "mean_rgb": dequantize(example["rgb"]).mean(axis=0),
                    "mean_audio": dequantize(example["audio"]).mean(axis=0)})
            videos.append(video)
    finally:
        for writer in [*writers.values(), *video_writers.values()]:
            writer.close()
    taxonomy.save(os.path.join(output_dir, "taxonomy.json"))
    if video_level:
        taxonomy.save(os.path.join(output_dir, VIDEO_LEVEL_DIR, "taxonomy.json"))
    if segment_ratings:
        with open(os.path.join(output_dir, "segment_classes.csv"), "w") as f:
            f.write("Class\n" + "".join(f"{int(c)}\n" for c in sorted(leaves)))
    args = dict(num_videos=num_videos, seed=seed, num_shards=num_shards, splits=list(splits),
                min_frames=min_frames, max_frames=max_frames, uncorrelated_fraction=uncorrelated_fraction,
                rgb_dim=rgb_dim, audio_dim=audio_dim, taxonomy_shape=list(taxonomy_shape),
                max_offset=max_offset, noise=noise, second_label_fraction=second_label_fraction,
                events_per_video=list(events_per_video), rank=rank, level_weights=list(level_weights),
                class_skew=class_skew, prototype_scale=prototype_scale, nuisance_scale=nuisance_scale,
                drift_scale=drift_scale, event_scale=event_scale, video_level=video_level,
                segment_ratings=segment_ratings, negative_segments=negative_segments)
    manifest = {
        "format": MANIFEST_FORMAT, "version": 1, "generator": GENERATOR, "args": args,
        "num_classes": taxonomy.num_classes,
        "features": [["rgb", rgb_dim], ["audio", audio_dim]], "taxonomy": "taxonomy.json",
        "counts": dict(zip(SPLITS, counts.tolist())), "files": files,
        "video_level_files": {split: [f"{VIDEO_LEVEL_DIR}/{n}" for n in names] for split, names in files.items()}
        if video_level else None,
        "segment_classes": sorted(int(c) for c in leaves) if segment_ratings else None,
        "segments": "[start frame, class, score] of each rated 5-frame segment (1.0 present, 0.0 absent)",
        "audio_offset": "frames from a visual event to its audio event (positive: audio lags)",
        "videos": videos,
    }
    with open(os.path.join(output_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


def _rate_segments(rng, num_frames, video_leaves, event_times, all_leaves, negative_segments):
    """Ratings `[start, class, score]` of one video, sorted; see the module docstring."""
    starts = np.arange(num_frames // SEGMENT_FRAMES) * SEGMENT_FRAMES  # complete segments only
    ratings = []
    for leaf, times in zip(video_leaves, event_times):
        with_event = np.isin(starts, np.asarray(times) // SEGMENT_FRAMES * SEGMENT_FRAMES)
        ratings += [[int(t), leaf, 1.0] for t in starts[with_event]]
        without = starts[~with_event]
        ratings += [[int(t), leaf, 0.0] for t in rng.choice(without, min(negative_segments, without.size),
                                                             replace=False)]
    others = [c for c in all_leaves if c not in video_leaves]
    if others and starts.size:
        leaf = int(rng.choice(others))
        ratings += [[int(t), leaf, 0.0] for t in rng.choice(starts, min(negative_segments, starts.size),
                                                             replace=False)]
    return sorted(ratings)


def _random_ids(rng, n):
    """Distinct 11-character ids in YouTube's alphabet, unrelated to the labels."""
    ids = []
    seen = set()
    while len(ids) < n:
        for row in rng.integers(0, len(_ID_ALPHABET), size=(n - len(ids), 11)):
            vid = "".join(_ID_ALPHABET[row])
            if vid not in seen:
                seen.add(vid)
                ids.append(vid)
    return ids


def ensure_default_data(cache_dir=None):
    """Path of the default synthetic dataset, generated on first use.

    `make_yt8m_data`'s defaults go to `<cache_dir>/yt8m_synthetic_v1`
    (`cache_dir` defaults to `default_cache_dir()`), made once and atomically
    by `vt_keras.data.cache.ensure_cached`; a copy made by another version of
    the generator (see `GENERATOR`) is replaced.

    Example:
        >>> root = ensure_default_data()  # root/train-*.tfrecord, root/taxonomy.json, ...
    """
    return ensure_cached(DEFAULT_DATASET, GENERATOR, lambda directory: make_yt8m_data(directory), cache_dir)


def ensure_default_video_data(cache_dir=None):
    """Directory of the default data's video-level records (`train-*`, `validate-*`, `test-*`, taxonomy.json).

    The same videos as `ensure_default_data()`'s frame-level records, as
    `tf.train.Example`s with `mean_rgb` and `mean_audio`; generated on first
    use with them.

    Example:
        >>> pattern = os.path.join(ensure_default_video_data(), "train-*.tfrecord")
    """
    return os.path.join(ensure_default_data(cache_dir), VIDEO_LEVEL_DIR)
