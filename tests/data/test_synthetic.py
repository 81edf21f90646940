"""Tests of the synthetic YouTube-8M data: files, determinism, planted structure, caching."""
import filecmp
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data import synthetic, yt8m
from vt_keras.data.taxonomy import Taxonomy
from vt_keras.errors import ConfigError

SMALL = dict(num_videos=200, num_shards=2, min_frames=6, max_frames=12, rgb_dim=32, audio_dim=16,
             taxonomy_shape=(3, 2, 2), uncorrelated_fraction=0.2, max_offset=2)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    manifest = synthetic.make_yt8m_data(str(directory), seed=7, **SMALL)
    return str(directory), manifest


def _read_split(directory, split, manifest, max_frames=12, rgb_dim=32):
    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(f"{directory}/{split}-*")))]
    with yt8m.data_errors():
        out = yt8m.parse_frame_example(tf.constant(records), (("rgb", rgb_dim), ("audio", 16)), max_frames=max_frames,
                                       num_classes=manifest["num_classes"])
    return {k: v.numpy() for k, v in out.items()}


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(small_data, tmp_path):
    directory, _ = small_data
    synthetic.make_yt8m_data(str(tmp_path / "again"), seed=7, **SMALL)
    synthetic.make_yt8m_data(str(tmp_path / "other"), seed=8, **SMALL)
    for sub in ("", "video"):
        names = sorted(n for n in os.listdir(os.path.join(directory, sub))
                       if os.path.isfile(os.path.join(directory, sub, n)))
        assert names == sorted(n for n in os.listdir(tmp_path / "again" / sub)
                               if os.path.isfile(tmp_path / "again" / sub / n))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(directory, sub), tmp_path / "again" / sub, names,
                                                   shallow=False)
        assert match == names and not mismatch and not errors
    assert not filecmp.cmp(f"{directory}/train-00000-of-00002.tfrecord",
                           tmp_path / "other" / "train-00000-of-00002.tfrecord", shallow=False)


def test_files_counts_and_manifest(small_data):
    directory, manifest = small_data
    assert manifest["counts"] == {"train": 160, "validate": 20, "test": 20}
    assert manifest["num_classes"] == 3 + 6 + 12
    for split, count in manifest["counts"].items():
        files = [f"{split}-{k:05d}-of-00002.tfrecord" for k in range(2)]
        assert manifest["files"][split] == files
        assert sum(1 for f in files for _ in tf.data.TFRecordDataset(os.path.join(directory, f))) == count
    with open(os.path.join(directory, "manifest.json")) as f:
        assert json.load(f) == json.loads(json.dumps(manifest))
    assert Taxonomy.load(directory) == Taxonomy.from_shape((3, 2, 2))
    ids = [v["id"] for v in manifest["videos"]]
    assert len(set(ids)) == 200 and all(len(i) == 11 for i in ids)


def test_labels_are_leaves_with_their_ancestors(small_data):
    directory, manifest = small_data
    tax = Taxonomy.load(directory)
    videos = {v["id"]: v for v in manifest["videos"]}
    for split in ("train", "validate", "test"):
        out = _read_split(directory, split, manifest)
        for vid, labels, num_frames in zip(out["id"], out["labels"], out["num_frames"]):
            video = videos[vid.decode()]
            assert video["split"] == split and num_frames == video["num_frames"]
            assert SMALL["min_frames"] <= num_frames <= SMALL["max_frames"]
            want = {a for leaf in video["leaves"] for a in [leaf] + tax.ancestors(leaf)}
            assert set(np.flatnonzero(labels).tolist()) == want == set(video["labels"])
            assert all(tax.classes[leaf].level == 2 for leaf in video["leaves"])
            assert video["top_category"] == tax.root(video["leaves"][0])


def test_uncorrelated_audio_fraction_and_donors(small_data):
    directory, manifest = small_data
    tax = Taxonomy.load(directory)
    flagged = [v for v in manifest["videos"] if v["uncorrelated_audio"]]
    assert len(flagged) == round(0.2 * 200)
    for v in flagged:
        assert v["audio_offset"] is None and tax.root(v["audio_source_leaf"]) != v["top_category"]
    for v in manifest["videos"]:
        if not v["uncorrelated_audio"]:
            assert abs(v["audio_offset"]) <= SMALL["max_offset"] and v["audio_source_leaf"] is None
    assert {v["audio_offset"] for v in manifest["videos"] if v["audio_offset"] is not None} == set(range(-2, 3))


def _ridge(x, y, lam=1.0):
    mean_x, mean_y = x.mean(0), y.mean(0)
    w = np.linalg.solve((x - mean_x).T @ (x - mean_x) + lam * np.eye(x.shape[1]), (x - mean_x).T @ (y - mean_y))
    return lambda z: (z - mean_x) @ w + mean_y


def test_mean_pooled_features_beat_the_label_frequency_baseline(small_data):
    directory, manifest = small_data
    splits = {s: _read_split(directory, s, manifest) for s in ("train", "validate", "test")}

    def pooled(s):
        out = splits[s]
        return np.concatenate([out["rgb"], out["audio"]], -1).sum(1) / out["num_frames"][:, None]

    predict = _ridge(pooled("train"), splits["train"]["labels"])
    held_x = np.concatenate([pooled("validate"), pooled("test")])
    held_y = np.concatenate([splits["validate"]["labels"], splits["test"]["labels"]])
    hit_at_1 = held_y[np.arange(len(held_y)), predict(held_x).argmax(1)].mean()
    baseline = held_y[:, splits["train"]["labels"].mean(0).argmax()].mean()
    assert hit_at_1 >= 0.7 and hit_at_1 >= baseline + 0.3


def test_uncorrelated_audio_sounds_like_another_category(small_data):
    directory, manifest = small_data
    videos = {v["id"]: v for v in manifest["videos"]}
    out = _read_split(directory, "train", manifest)
    audio = out["audio"].sum(1) / out["num_frames"][:, None]
    top = np.array([videos[v.decode()]["top_category"] for v in out["id"]])
    flags = np.array([videos[v.decode()]["uncorrelated_audio"] for v in out["id"]])
    centroids = np.stack([audio[(top == c) & ~flags].mean(0) for c in range(3)])
    nearest = np.argmin(((audio[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest[flags] != top[flags]) >= 0.8
    assert np.mean(nearest[~flags] == top[~flags]) >= 0.75


def test_audio_events_follow_visual_events_by_the_offset(tmp_path):
    # Without prototypes, nuisance, drift and noise, only event frames differ from 0.
    quiet = dict(SMALL, num_videos=30, prototype_scale=0.0, nuisance_scale=0.0, drift_scale=0.0, noise=0.0,
                 event_scale=1.0)
    manifest = synthetic.make_yt8m_data(str(tmp_path), seed=3, **quiet)
    videos = {v["id"]: v for v in manifest["videos"]}
    out = _read_split(str(tmp_path), "train", manifest)
    background = yt8m.dequantize(yt8m.quantize(0.0))
    for i, vid in enumerate(out["id"]):
        video, n = videos[vid.decode()], out["num_frames"][i]
        rgb_events = np.flatnonzero(np.any(out["rgb"][i, :n] != background, axis=-1)).tolist()
        audio_events = np.flatnonzero(np.any(out["audio"][i, :n] != background, axis=-1)).tolist()
        assert rgb_events == video["event_frames"] and len(rgb_events) >= 2
        if not video["uncorrelated_audio"]:
            assert audio_events == [t + video["audio_offset"] for t in rgb_events]
        else:
            assert audio_events


def test_values_mostly_within_quantization_range(tmp_path):
    # Large dimensions as in the default, few videos: values beyond +-2 get clipped when quantized.
    synthetic.make_yt8m_data(str(tmp_path), num_videos=4, num_shards=1, min_frames=20, max_frames=20, seed=1)
    out = _read_split_full(str(tmp_path))
    codes = yt8m.quantize(out["rgb"][out["mask"]])
    assert np.mean((codes == 0) | (codes == 255)) < 0.01


def _read_split_full(directory):
    records = [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(f"{directory}/*.tfrecord"))]
    out = yt8m.parse_frame_example(tf.constant(records), max_frames=20, num_classes=88)
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(splits=(0.5, 0.2, 0.2)), "splits"),
    (dict(min_frames=10, max_frames=5), "min_frames"),
    (dict(max_offset=6, min_frames=6), "max_offset"),
    (dict(uncorrelated_fraction=1.5), "uncorrelated_fraction"),
])
def test_bad_arguments_are_config_errors(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        synthetic.make_yt8m_data(str(tmp_path), num_videos=4, **kwargs)


def test_video_level_files_hold_the_mean_of_the_dequantized_frames(small_data):
    directory, manifest = small_data
    assert manifest["video_level_files"]["train"] == ["video/train-00000-of-00002.tfrecord",
                                                      "video/train-00001-of-00002.tfrecord"]
    assert Taxonomy.load(os.path.join(directory, "video")) == Taxonomy.load(directory)
    for split in synthetic.SPLITS:
        frames = _read_split(directory, split, manifest)
        records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(f"{directory}/video/{split}-*")))]
        with yt8m.data_errors():
            videos = yt8m.parse_video_example(tf.constant(records), (("mean_rgb", 32), ("mean_audio", 16)),
                                              num_classes=manifest["num_classes"])
        np.testing.assert_array_equal(videos["id"].numpy(), frames["id"])
        np.testing.assert_array_equal(videos["labels"].numpy(), frames["labels"])
        for name in ("rgb", "audio"):
            # float64 re-derivation: every frame was read (max_frames=12 is the longest video).
            want = frames[name].astype(np.float64).sum(1) / frames["num_frames"][:, None]
            np.testing.assert_allclose(videos[f"mean_{name}"].numpy(), want, atol=1e-6)


def test_segment_ratings_of_validation_and_test_videos(small_data):
    from vt_keras.data.segments import read_segment_ratings

    directory, manifest = small_data
    leaves = Taxonomy.from_shape((3, 2, 2)).leaves()
    assert manifest["segment_classes"] == leaves
    with open(os.path.join(directory, "segment_classes.csv")) as f:
        assert f.read().split() == ["Class"] + [str(c) for c in leaves]
    expected = {}
    for video in manifest["videos"]:
        if video["split"] == "train":
            assert "segments" not in video
            continue
        events = np.array(video["event_frames"])
        for start, c, score in video["segments"]:
            assert start % 5 == 0 and start + 5 <= video["num_frames"] and c in leaves
            # Present: the segment holds a visual event of a leaf the video has (one leaf: its events).
            holds_event = bool(np.any((events >= start) & (events < start + 5)))
            if score == 1.0:
                assert c in video["leaves"] and holds_event
            elif len(video["leaves"]) == 1:
                assert c not in video["leaves"] or not holds_event
            expected.setdefault(c, {})[f"{video['id']}:{start}"] = score
    ratings = read_segment_ratings(f"{directory}/validate-*,{directory}/test-*", manifest["num_classes"])
    assert ratings == expected
    scores = [s for r in ratings.values() for s in r.values()]
    assert 0.25 < np.mean(scores) < 0.75  # present and absent segments both rated


def test_planted_events_localise_the_rated_classes_within_videos(tmp_path):
    """A detector of each leaf's event pattern (estimated on training videos from the manifest's event
    frames) ranks a video's present segments above its absent ones; a video-level score cannot (ties)."""
    # 256-d frames: closer to the default's 1024 (where the events stand out more) than SMALL's 32.
    manifest = synthetic.make_yt8m_data(str(tmp_path), seed=5, **dict(SMALL, num_videos=160, num_shards=1,
                                                                       min_frames=20, max_frames=30, rgb_dim=256))
    videos = {v["id"]: v for v in manifest["videos"]}
    read = lambda split: _read_split(str(tmp_path), split, manifest, max_frames=30, rgb_dim=256)  # noqa: E731
    directions = {}
    train = read("train")
    for i, vid in enumerate(train["id"]):
        video = videos[vid.decode()]
        if len(video["leaves"]) == 1:
            frames = train["rgb"][i, :video["num_frames"]]
            frames = frames - frames.mean(0)
            directions.setdefault(video["leaves"][0], []).append(frames[video["event_frames"]].mean(0))
    directions = {c: np.mean(d, axis=0) for c, d in directions.items()}
    ordered = pairs = 0
    for split in ("validate", "test"):
        data = read(split)
        for i, vid in enumerate(data["id"]):
            video = videos[vid.decode()]
            frames = data["rgb"][i, :video["num_frames"]]
            frames = frames - frames.mean(0)
            for c in {c for _, c, _ in video["segments"]} & set(directions):
                score = {start: (frames[start:start + 5] @ directions[c]).max()
                         for start, rated, _ in video["segments"] if rated == c}
                present = [score[t] for t, rated, y in video["segments"] if rated == c and y == 1.0]
                absent = [score[t] for t, rated, y in video["segments"] if rated == c and y == 0.0]
                ordered += sum(p > a for p in present for a in absent)
                pairs += len(present) * len(absent)
    assert pairs >= 100 and ordered / pairs >= 0.9, (ordered, pairs)


def test_ensure_default_data_is_cached_under_the_generator_version(tmp_path, monkeypatch):
    calls = []
    real = synthetic.make_yt8m_data

    def tiny(output_dir):
        calls.append(output_dir)
        return real(output_dir, num_videos=8, num_shards=1, min_frames=4, max_frames=5, rgb_dim=8, audio_dim=4)

    monkeypatch.setattr(synthetic, "make_yt8m_data", tiny)
    monkeypatch.setenv("VT_KERAS_CACHE", str(tmp_path / "cache"))
    path = synthetic.ensure_default_data()
    assert path == str(tmp_path / "cache" / "yt8m_synthetic_v1")
    assert os.path.exists(os.path.join(path, "manifest.json")) and len(calls) == 1
    assert synthetic.ensure_default_data() == path and len(calls) == 1
    with open(os.path.join(path, "cache.json")) as f:
        assert json.load(f) == {"dataset": "yt8m_synthetic_v1", "generator": synthetic.GENERATOR}
    assert synthetic.ensure_default_video_data() == os.path.join(path, "video") and len(calls) == 1
    assert os.path.exists(os.path.join(path, "video", "train-00000-of-00001.tfrecord"))
    monkeypatch.setattr(synthetic, "GENERATOR", synthetic.GENERATOR + 1)  # the cached copy is now stale
    assert synthetic.ensure_default_data() == path and len(calls) == 2
