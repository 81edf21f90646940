"""Tests of vt_keras.text: normalisation, vocabularies, TextTokenizer."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.errors import ConfigError, DataError
from vt_keras.text import (
    TextTokenizer,
    build_vocabulary,
    load_vocabulary,
    save_vocabulary,
    split_words,
)

VOCAB = ["the", "eggs", "crack", "whisk", "pan"]


def _ids(tokenizer, strings):
    return tokenizer(tf.constant(strings)).numpy()


def test_split_words_lowercases_and_drops_punctuation():
    words = split_words(tf.constant(["Crack the EGGS, then whisk!", "  Über-Café  ", ""]))
    assert words.to_list() == [
        [b"crack", b"the", b"eggs", b"then", b"whisk"],
        ["über".encode(), "café".encode()],
        [],
    ]


def test_build_vocabulary_counts_orders_and_cuts():
    captions = ["The eggs.", "the EGGS", "crack the eggs", "whisk", b"pan pan the"]
    # the: 4, eggs: 3, pan: 2, crack: 1, whisk: 1 (ties alphabetical).
    assert build_vocabulary(captions, min_count=1) == ["the", "eggs", "pan", "crack", "whisk"]
    assert build_vocabulary(captions, min_count=2) == ["the", "eggs", "pan"]
    assert build_vocabulary(captions, max_size=2, min_count=1) == ["the", "eggs"]
    # Chunking (1024 captions per batch) must not change counts.
    many = ["a b"] * 1500 + ["b"] * 10
    assert build_vocabulary(many, min_count=1) == ["b", "a"]


def test_build_vocabulary_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="min_count"):
        build_vocabulary(["a"], min_count=0)
    with pytest.raises(ConfigError, match="max_size"):
        build_vocabulary(["a"], max_size=0)


def test_vocabulary_file_round_trip(tmp_path):
    path = str(tmp_path / "vocab.txt")
    vocab = ["the", "café", "eggs"]
    save_vocabulary(vocab, path)
    with open(path, encoding="utf-8") as f:
        assert f.read() == "the\ncafé\neggs\n"
    assert load_vocabulary(path) == vocab


def test_load_vocabulary_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("the\n\neggs\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        load_vocabulary(str(bad))
    dup = tmp_path / "dup.txt"
    dup.write_text("the\neggs\nthe\n", encoding="utf-8")
    with pytest.raises(DataError, match="'the' twice"):
        load_vocabulary(str(dup))


def test_tokenizer_ids_padding_and_truncation():
    tokenizer = TextTokenizer(VOCAB, max_tokens=4, num_oov_buckets=3)
    ids = _ids(tokenizer, ["Crack the eggs!", "", "the the the the the the"])
    np.testing.assert_array_equal(ids, [[3, 1, 2, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert ids.dtype == np.int32
    assert tokenizer.vocabulary_size == len(VOCAB) + 3 + 1


def test_tokenizer_lowercases():
    tokenizer = TextTokenizer(VOCAB, max_tokens=4)
    np.testing.assert_array_equal(
        _ids(tokenizer, ["CRACK THE Eggs"]), _ids(tokenizer, ["crack the eggs"])
    )


def test_tokenizer_oov_buckets_are_stable_hashes():
    buckets = 5
    tokenizer = TextTokenizer(VOCAB, max_tokens=3, num_oov_buckets=buckets)
    words = [f"unseen{i}" for i in range(40)]
    ids = _ids(tokenizer, words)[:, 0]
    first_oov = len(VOCAB) + 1
    assert ids.min() >= first_oov and ids.max() < first_oov + buckets
    assert len(set(ids.tolist())) > 1  # words spread over several buckets
    # Same word → same id, in a different tokenizer and in a different batch.
    again = TextTokenizer(VOCAB, max_tokens=3, num_oov_buckets=buckets)
    np.testing.assert_array_equal(_ids(again, words[::-1])[:, 0], ids[::-1])
    # The bucket is Fingerprint64(word) mod buckets, recomputed by another op.
    expected = tf.strings.to_hash_bucket_fast(tf.constant(words), buckets).numpy()
    np.testing.assert_array_equal(ids, expected + first_oov)


def test_tokenizer_any_shape_and_tf_function():
    tokenizer = TextTokenizer(VOCAB, max_tokens=6)
    strings = tf.constant([["crack eggs", ""], ["pan", "whisk the eggs"], ["x y", "the"]])

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string)])
    def tokenize(s):
        return tokenizer(s)

    ids = tokenize(strings).numpy()
    assert ids.shape == (3, 2, 6)
    flat = _ids(tokenizer, np.reshape(strings.numpy(), [-1]).tolist())
    np.testing.assert_array_equal(ids.reshape(6, 6), flat)
    assert _ids(tokenizer, "the eggs").shape == (6,)


def test_tokenizer_config_and_keras_round_trip(tmp_path):
    tokenizer = TextTokenizer(VOCAB, max_tokens=5, num_oov_buckets=2, name="tok")
    config = tokenizer.get_config()
    assert config["vocabulary"] == VOCAB
    assert config["max_tokens"] == 5 and config["num_oov_buckets"] == 2
    clone = TextTokenizer.from_config(config)
    strings = ["crack the unknown eggs", "PAN"]
    np.testing.assert_array_equal(_ids(clone, strings), _ids(tokenizer, strings))

    inputs = keras.Input(shape=(2,), dtype="string")
    model = keras.Model(inputs, TextTokenizer(VOCAB, max_tokens=5)(inputs))
    path = str(tmp_path / "tok.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    batch = tf.constant([strings])
    np.testing.assert_array_equal(loaded(batch).numpy(), model(batch).numpy())


def test_tokenizer_saved_model_export_keeps_table(tmp_path):
    inputs = keras.Input(shape=(), dtype="string")
    model = keras.Model(inputs, TextTokenizer(VOCAB, max_tokens=4)(inputs))
    path = os.path.join(str(tmp_path), "export")
    model.export(path, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(path)
    batch = tf.constant(["crack the eggs", "zzz pan"])
    np.testing.assert_array_equal(served.serve(batch).numpy(), model(batch).numpy())


def test_tokenizer_rejects_bad_vocabulary():
    with pytest.raises(ConfigError, match="twice"):
        TextTokenizer(["a", "b", "a"])
    with pytest.raises(ConfigError, match="single string"):
        TextTokenizer("abc")
    with pytest.raises(ConfigError, match="max_tokens"):
        TextTokenizer(["a"], max_tokens=0)
