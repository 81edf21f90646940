"""Tests of the synthetic video–text generator and its planted structure."""
import filecmp
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data.video_text import video_text_dataset
from vt_keras.data.video_text_synthetic import (
    ALIGNED,
    IRRELEVANT,
    SHUFFLED,
    make_video_text_data,
    synthesize_video_text,
)
from vt_keras.errors import ConfigError


@pytest.fixture(scope="module")
def default_videos():
    return synthesize_video_text(seed=0)


def _words(caption):
    return caption.lower().rstrip(".!").split()


def test_caption_kinds_have_the_requested_fractions(default_videos):
    videos, _ = default_videos
    kinds = np.concatenate([v["caption_kind"] for v in videos])
    assert kinds.size > 5000
    assert abs(np.mean(kinds == SHUFFLED) - 0.3) < 0.02
    assert abs(np.mean(kinds == IRRELEVANT) - 0.2) < 0.02
    # Other fractions are honoured too, including none at all.
    few, _ = synthesize_video_text(num_videos=300, seed=1, shuffle_fraction=0.0,
                                   irrelevant_fraction=0.5)
    kinds = np.concatenate([v["caption_kind"] for v in few])
    assert not np.any(kinds == SHUFFLED)
    assert abs(np.mean(kinds == IRRELEVANT) - 0.5) < 0.03


def test_captions_describe_the_step_their_kind_says(default_videos):
    videos, step_words = default_videos
    for v in videos[:200]:
        steps, caption_steps, kinds = v["clip_step"], v["caption_step"], v["caption_kind"]
        assert len(set(steps.tolist())) == len(steps) == len(v["captions"]) == len(v["clips"])
        for i, (caption, step, kind) in enumerate(zip(v["captions"], caption_steps, kinds)):
            words = _words(caption)
            # The step's words, in order, with only filler words added.
            assert [w for w in words if w in step_words[step]] == step_words[step]
            if kind == ALIGNED:
                assert step == steps[i]
            elif kind == SHUFFLED:
                neighbours = {steps[j] for j in (i - 1, i + 1) if 0 <= j < len(steps)}
                assert step != steps[i] and step in neighbours
            else:
                assert step not in steps


def test_clips_are_step_prototypes_plus_noise(default_videos):
    videos, _ = default_videos
    clips = np.concatenate([v["clips"] for v in videos[:300]])
    steps = np.concatenate([v["clip_step"] for v in videos[:300]])
    means = {s: clips[steps == s].mean(0) for s in np.unique(steps) if np.sum(steps == s) > 3}
    # Nearest class mean recovers each clip's step.
    keys = np.array(list(means))
    centres = np.stack([means[k] for k in keys])
    nearest = keys[np.argmin(((clips[:, None] - centres[None]) ** 2).sum(-1), axis=1)]
    known = np.isin(steps, keys)
    assert np.mean(nearest[known] == steps[known]) > 0.95


def test_influential_steps_are_shared_and_step_sets_identify_videos(default_videos):
    videos, _ = default_videos
    presence = np.zeros((len(videos), 120), bool)
    for i, v in enumerate(videos):
        presence[i, v["clip_step"]] = True
    share = presence.mean(0)
    assert share[:6].min() > 0.25  # each influential step in over a quarter of videos
    assert share[6:].max() < 0.12
    assert len({frozenset(v["clip_step"].tolist()) for v in videos}) == len(videos)


def test_files_are_deterministic_and_parse(tmp_path):
    kwargs = dict(num_videos=40, num_steps=30, clip_dim=8, max_clips=6, num_shards=2)
    a = make_video_text_data(str(tmp_path / "a"), seed=5, **kwargs)
    make_video_text_data(str(tmp_path / "b"), seed=5, **kwargs)
    make_video_text_data(str(tmp_path / "c"), seed=6, **kwargs)
    files = sorted(f for s in a["splits"].values() for f in s["files"])
    assert len(files) == 6
    for name in files:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False)
    assert not filecmp.cmp(tmp_path / "a" / files[-1], tmp_path / "c" / files[-1],
                           shallow=False)
    with open(tmp_path / "a" / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["arguments"]["seed"] == 5 and manifest["arguments"]["clip_dim"] == 8
    counts = {k: v["num_videos"] for k, v in manifest["splits"].items()}
    assert counts == {"train": 32, "validate": 4, "test": 4}

    pattern = os.path.join(str(tmp_path / "a"), manifest["splits"]["train"]["pattern"])
    ds = video_text_dataset(pattern, 64, clip_dim=8, max_clips=6,
                            expert_features={"video_mean": 8, "text_bow": 64})
    batch = next(iter(ds))
    assert batch["id"].shape == (32,) and batch["clips"].shape == (32, 6, 8)
    # The expert video feature is the mean of the (un-truncated) clips.
    n = batch["num_clips"].numpy()
    mean = tf.reduce_sum(batch["clips"], 1).numpy() / n[:, None]
    np.testing.assert_allclose(batch["expert/video_mean"].numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch["expert/text_bow"], axis=1), 1.0, atol=1e-5)


def test_quantized_files_dequantize_close_to_floats(tmp_path):
    kwargs = dict(num_videos=10, num_steps=20, clip_dim=8, max_clips=5, num_shards=1,
                  splits=(1.0, 0.0, 0.0))
    make_video_text_data(str(tmp_path / "f"), **kwargs)
    make_video_text_data(str(tmp_path / "q"), clip_encoding="quantized", **kwargs)
    batches = [next(iter(video_text_dataset(str(tmp_path / d / "train-*"), 10, clip_dim=8,
                                            max_clips=5, clip_encoding=enc)))
               for d, enc in (("f", "float"), ("q", "quantized"))]
    inside = np.abs(batches[0]["clips"].numpy()) < 1.99
    diff = np.abs(batches[0]["clips"].numpy() - batches[1]["clips"].numpy())
    # Half a quantization step, plus the starter code's 4/512 offset.
    assert diff[inside].max() <= 2.0 / 255 + 4.0 / 512 + 1e-6
    assert diff[inside].max() > 4.0 / 512  # the offset really is there


def test_text_features_make_retrieval_learnable():
    """A ridge map from bag-of-words to mean clip retrieves well above chance."""
    videos, step_words = synthesize_video_text(num_videos=400, seed=2)
    vocab = {w: i for i, w in enumerate(sorted({w for ws in step_words for w in ws}))}
    text = np.zeros((len(videos), len(vocab)))
    for i, v in enumerate(videos):
        for caption in v["captions"]:
            for w in _words(caption):
                if w in vocab:
                    text[i, vocab[w]] += 1
    video = np.stack([v["clips"].mean(0) for v in videos])
    train, test = slice(0, 300), slice(300, 400)
    x, y = text[train], video[train]
    w = np.linalg.solve(x.T @ x + 1.0 * np.eye(len(vocab)), x.T @ y)
    pred = text[test] @ w
    dist = ((pred[:, None] - video[test][None]) ** 2).sum(-1)
    recall_at_1 = np.mean(np.argmin(dist, axis=1) == np.arange(100))
    assert recall_at_1 > 0.25  # chance is 0.01; a plain linear map gets about 0.4


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="splits"):
        make_video_text_data(str(tmp_path), splits=(0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="shuffle_fraction \\+ irrelevant_fraction"):
        synthesize_video_text(shuffle_fraction=0.7, irrelevant_fraction=0.5)
    with pytest.raises(ConfigError, match="num_steps"):
        synthesize_video_text(num_steps=10, max_clips=12)
