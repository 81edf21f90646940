"""Synthetic video–text records with a planted structure.

A vocabulary of `num_steps` "steps" (think recipe steps) underlies every
video. Step `s` has a visual prototype `p_s` (a random vector) and a few
pseudo-words. A video is a handful of distinct steps in random order; its
clip `i` is `p_{step_i}` plus Gaussian noise, and its caption `i` is the
step's words with filler words ("the", "now", ...) mixed in, a capital letter
and a full stop. Since a video's set of steps (almost surely) identifies it,
video–text retrieval is learnable, yet two kinds of caption noise found in
instructional videos are planted on purpose:

- shuffled (`shuffle_fraction` of the captions): adjacent captions swapped,
  so the caption describes the neighbouring clip (local misalignment);
- irrelevant (`irrelevant_fraction`): the caption describes a step that is
  not in the video at all.

The first `influential_steps` step ids are shared by many videos: each clip
is one of them with probability `influential_rate` (the "influential
samples", with high proximity to the rest of the batch, that CrossCLR prunes).

Ground truth goes into extra context keys the parser ignores:
`synthetic/clip_step`, `synthetic/caption_step` and `synthetic/caption_kind`
(0 aligned, 1 shuffled, 2 irrelevant), all int64 lists. Expert features for
proximity-based losses: `expert/video_mean` (mean clip, `clip_dim` floats) and
`expert/text_bow` (L2-normalised hashed bag of caption words,
`text_feature_dim` floats).

Example:

```python
manifest = make_video_text_data("/tmp/vt_data", num_videos=200)
ds = video_text_dataset("/tmp/vt_data/train-*.tfrecord", 32, clip_dim=64)
```
"""
import json
import os
import random
import zlib

import numpy as np
import tensorflow as tf

from vt_keras.data.cache import ensure_cached
from vt_keras.data.video_text import make_video_text_example, write_video_text_records
from vt_keras.errors import ConfigError

DEFAULT_DATASET = "video_text_synthetic_v1"
# Bump when a change to this file changes what the default arguments generate:
# cached copies of another generator are then rebuilt.
GENERATOR = 1

FILLER_WORDS = ("the", "then", "and", "now", "we", "a", "next", "it", "so", "just", "gently",
                "here")
ALIGNED, SHUFFLED, IRRELEVANT = 0, 1, 2
SPLIT_NAMES = ("train", "validate", "test")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _pseudo_words(py_rng, count):
    """`count` distinct lower-case pseudo-words (2–3 syllables), none a filler."""
    words, seen = [], set(FILLER_WORDS)
    while len(words) < count:
        word = "".join(py_rng.choice(_CONSONANTS) + py_rng.choice(_VOWELS)
                       for _ in range(py_rng.randint(2, 3)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _stochastic_round(py_rng, x):
    whole = int(x)
    return whole + (py_rng.random() < x - whole)


def _caption(py_rng, words, max_filler_words):
    tokens = list(words)
    for _ in range(py_rng.randint(0, max_filler_words)):
        tokens.insert(py_rng.randint(0, len(tokens)), py_rng.choice(FILLER_WORDS))
    text = " ".join(tokens)
    return text[0].upper() + text[1:] + ("!" if py_rng.random() < 0.3 else ".")


def _bag_of_words(captions, dim):
    bag = np.zeros(dim, np.float64)
    for caption in captions:
        for word in caption.lower().strip(".!").split():
            bag[zlib.crc32(word.encode("utf-8")) % dim] += 1.0
    return (bag / max(np.linalg.norm(bag), 1e-12)).astype(np.float32)


def _check(num_videos, num_steps, min_clips, max_clips, shuffle_fraction, irrelevant_fraction,
           influential_steps, influential_rate, splits, num_shards):
    problems = []
    if not 2 <= min_clips <= max_clips:
        problems.append(f"min_clips/max_clips: expected 2 <= min <= max, found {min_clips}, "
                        f"{max_clips}")
    if num_steps - influential_steps < max_clips + 1 or influential_steps < 0:
        problems.append(f"num_steps: expected >= influential_steps + max_clips + 1 = "
                        f"{influential_steps + max_clips + 1}, found {num_steps}")
    for name, value in (("shuffle_fraction", shuffle_fraction),
                        ("irrelevant_fraction", irrelevant_fraction),
                        ("influential_rate", influential_rate)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name}: expected a value in [0, 1], found {value}")
    if shuffle_fraction + irrelevant_fraction > 1.0:
        problems.append("shuffle_fraction + irrelevant_fraction: expected <= 1, found "
                        f"{shuffle_fraction + irrelevant_fraction}")
    if len(splits) != 3 or min(splits) < 0 or abs(sum(splits) - 1.0) > 1e-6:
        problems.append(f"splits: expected 3 non-negative fractions summing to 1, found {splits}")
    if num_videos < 1 or num_shards < 1:
        problems.append(f"num_videos/num_shards: expected >= 1, found {num_videos}, {num_shards}")
    if problems:
        raise ConfigError("make_video_text_data: " + "; ".join(problems))


def synthesize_video_text(num_videos=1200, num_steps=120, clip_dim=64, min_clips=4, max_clips=12,
                          seed=0, shuffle_fraction=0.3, irrelevant_fraction=0.2,
                          influential_steps=6, influential_rate=0.25, words_per_step=3,
                          max_filler_words=3, prototype_scale=0.5, clip_noise=0.3):
    """The synthetic videos in memory (see the module docstring).

    Returns:
      `(videos, step_words)`: a list of dicts with keys `id`, `clips` (float32
      `[n, clip_dim]`), `captions` (n str), `clip_step`, `caption_step`,
      `caption_kind` (int arrays `[n]`), and the list of each step's words.
    """
    _check(num_videos, num_steps, min_clips, max_clips, shuffle_fraction, irrelevant_fraction,
           influential_steps, influential_rate, (1.0, 0.0, 0.0), 1)
    rng = np.random.default_rng(seed)
    # Python's generator for the many scalar draws (numpy's costs ~20x more
    # per call); both are seeded, so the output stays deterministic.
    py_rng = random.Random(seed)
    prototypes = rng.normal(0.0, prototype_scale, (num_steps, clip_dim))
    words = _pseudo_words(py_rng, num_steps * words_per_step)
    step_words = [words[s * words_per_step:(s + 1) * words_per_step] for s in range(num_steps)]
    influential = range(influential_steps)
    regular = range(influential_steps, num_steps)
    videos = []
    for index in range(num_videos):
        n = py_rng.randint(min_clips, max_clips)
        k = min(sum(py_rng.random() < influential_rate for _ in range(n)), influential_steps)
        steps = py_rng.sample(influential, k) + py_rng.sample(regular, n - k)
        py_rng.shuffle(steps)
        caption_step = list(steps)
        kind = [ALIGNED] * n
        # Disjoint adjacent pairs, uniformly: choose starts among n - pairs
        # slots, then spread them out by their rank.
        pairs = min(_stochastic_round(py_rng, shuffle_fraction * n / 2), n // 2)
        for rank, slot in enumerate(sorted(py_rng.sample(range(n - pairs), pairs))):
            i = slot + rank
            caption_step[i], caption_step[i + 1] = caption_step[i + 1], caption_step[i]
            kind[i] = kind[i + 1] = SHUFFLED
        aligned = [i for i in range(n) if kind[i] == ALIGNED]
        count = min(_stochastic_round(py_rng, irrelevant_fraction * n), len(aligned))
        for i in py_rng.sample(aligned, count):
            # Rejection sampling: the video holds few of the steps.
            step = steps[0]
            while step in steps:
                step = py_rng.randrange(num_steps)
            caption_step[i] = step
            kind[i] = IRRELEVANT
        clips = prototypes[steps] + rng.normal(0.0, clip_noise, (n, clip_dim))
        videos.append({
            "id": f"video{index:05d}",
            "clips": clips.astype(np.float32),
            "captions": [_caption(py_rng, step_words[s], max_filler_words) for s in caption_step],
            "clip_step": np.array(steps), "caption_step": np.array(caption_step),
            "caption_kind": np.array(kind),
        })
    return videos, step_words


def make_video_text_data(output_dir, num_videos=1200, num_steps=120, clip_dim=64, min_clips=4,
                         max_clips=12, seed=0, shuffle_fraction=0.3, irrelevant_fraction=0.2,
                         num_shards=2, splits=(0.8, 0.1, 0.1), influential_steps=6,
                         influential_rate=0.25, words_per_step=3, max_filler_words=3,
                         prototype_scale=0.5, clip_noise=0.3, clip_encoding="float",
                         text_feature_dim=64):
    """Writes synthetic train/validate/test shards and `manifest.json`.

    Files are `<split>-<shard>-of-<num_shards>.tfrecord` in `output_dir`. The
    same arguments always give byte-identical files.

    Returns:
      The manifest dict: `arguments`, and per split its `pattern` (relative
      to `output_dir`), `files` and `num_videos`; `influential_step_ids`.
    """
    arguments = {k: v for k, v in locals().items() if k != "output_dir"}
    arguments["splits"] = list(splits)
    _check(num_videos, num_steps, min_clips, max_clips, shuffle_fraction, irrelevant_fraction,
           influential_steps, influential_rate, tuple(splits), num_shards)
    videos, _ = synthesize_video_text(
        num_videos, num_steps, clip_dim, min_clips, max_clips, seed, shuffle_fraction,
        irrelevant_fraction, influential_steps, influential_rate, words_per_step,
        max_filler_words, prototype_scale, clip_noise)
    order = np.random.default_rng([seed, 1]).permutation(num_videos)
    bounds = np.round(np.cumsum(splits) * num_videos).astype(int)
    tf.io.gfile.makedirs(output_dir)
    manifest = {"arguments": arguments, "splits": {},
                "influential_step_ids": list(range(influential_steps))}
    for split, start, stop in zip(SPLIT_NAMES, np.concatenate([[0], bounds[:2]]), bounds):
        members = order[start:stop]
        files = []
        for shard in range(num_shards):
            name = f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
            examples = [_to_example(videos[i], clip_encoding, text_feature_dim)
                        for i in members[shard::num_shards]]
            write_video_text_records(os.path.join(output_dir, name), examples)
            files.append(name)
        manifest["splits"][split] = {"pattern": f"{split}-*-of-{num_shards:05d}.tfrecord",
                                     "files": files, "num_videos": int(members.size)}
    with tf.io.gfile.GFile(os.path.join(output_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


def _to_example(video, clip_encoding, text_feature_dim):
    experts = {"video_mean": video["clips"].mean(axis=0),
               "text_bow": _bag_of_words(video["captions"], text_feature_dim)}
    ex = make_video_text_example(video["id"], video["clips"], video["captions"],
                                 clip_encoding=clip_encoding, expert_features=experts)
    for key in ("clip_step", "caption_step", "caption_kind"):
        ex.context.feature["synthetic/" + key].int64_list.value.extend(
            int(v) for v in video[key])
    return ex


def ensure_default_video_text_data(cache_dir=None):
    """Path of the embedded default video–text data, generated on first use.

    `make_video_text_data`'s defaults (1200 synthetic videos, 80/10/10 splits)
    go to `<cache_dir>/video_text_synthetic_v1`, made once and atomically by
    `vt_keras.data.cache.ensure_cached`; a copy made by another version of the
    generator (`GENERATOR`) is replaced.

    Example:
        >>> root = ensure_default_video_text_data()  # root/train-*.tfrecord, ...
    """
    return ensure_cached(DEFAULT_DATASET, GENERATOR, lambda directory: make_video_text_data(directory), cache_dir)
