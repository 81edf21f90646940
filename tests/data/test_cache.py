"""Tests of the generated-data cache: once, atomically, keyed by the generator version."""
import json
import os

import pytest

from vt_keras.data.cache import ensure_cached
from vt_keras.data.video_text_synthetic import DEFAULT_DATASET, GENERATOR, ensure_default_video_text_data
from vt_keras.errors import DataError


def _maker(calls, content="data"):
    def make(directory):
        calls.append(directory)
        with open(os.path.join(directory, "train-00000-of-00001.tfrecord"), "w") as f:
            f.write(content)

    return make


def _read(path):
    with open(os.path.join(path, "train-00000-of-00001.tfrecord")) as f:
        return f.read()


def test_made_once_then_reused(tmp_path):
    calls = []
    path = ensure_cached("d", 1, _maker(calls), str(tmp_path))
    assert path == str(tmp_path / "d") and _read(path) == "data"
    assert ensure_cached("d", 1, _maker(calls), str(tmp_path)) == path
    assert len(calls) == 1 and os.listdir(tmp_path) == ["d"]  # no temporary directory left
    with open(tmp_path / "d" / "cache.json") as f:
        assert json.load(f) == {"dataset": "d", "generator": 1}


def test_another_generator_version_replaces_the_whole_copy(tmp_path):
    ensure_cached("d", 1, _maker([], "old"), str(tmp_path))
    (tmp_path / "d" / "left-over.tfrecord").write_text("from version 1")
    calls = []
    path = ensure_cached("d", 2, _maker(calls, "new"), str(tmp_path))
    assert len(calls) == 1 and _read(path) == "new"
    assert sorted(os.listdir(path)) == ["cache.json", "train-00000-of-00001.tfrecord"]  # nothing half-used
    assert os.listdir(tmp_path) == ["d"]


def test_a_copy_from_before_the_stamp_is_regenerated(tmp_path):
    # Older releases wrote the dataset with its manifest.json and no cache.json.
    old = tmp_path / "d"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    calls = []
    ensure_cached("d", 1, _maker(calls), str(tmp_path))
    assert len(calls) == 1 and not (old / "manifest.json").exists()


def test_an_interrupted_generation_leaves_nothing(tmp_path):
    def interrupted(directory):
        with open(os.path.join(directory, "train-00000-of-00001.tfrecord"), "w"):
            pass
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_cached("d", 1, interrupted, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_foreign_directory_is_left_alone(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match=r"'.*d' exists but was not written by the data cache.*move or delete it"):
        ensure_cached("d", 1, _maker([]), str(tmp_path))
    assert (tmp_path / "d" / "mine.txt").read_text() == "user data"


def test_video_text_default_data_goes_through_the_same_cache(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("vt_keras.data.video_text_synthetic.make_video_text_data", _maker(calls))
    path = ensure_default_video_text_data(str(tmp_path))
    assert path == str(tmp_path / DEFAULT_DATASET) and ensure_default_video_text_data(str(tmp_path)) == path
    assert len(calls) == 1
    with open(os.path.join(path, "cache.json")) as f:
        assert json.load(f)["generator"] == GENERATOR
