"""In-graph caption tokenization with tensorflow-text, and word vocabularies.

Text is normalised the same way everywhere, in the graph, so training,
evaluation, vocabulary building and a serving export can never disagree:

1. Unicode case folding (`tensorflow_text.case_fold_utf8`, NFKC + lower case);
2. every run of punctuation or symbol characters becomes one space;
3. whitespace splitting (`tensorflow_text.WhitespaceTokenizer`).

Ids of a `TextTokenizer`: 0 is padding, `1 .. V` the vocabulary in file
order, `V + 1 .. V + num_oov_buckets` hash buckets (Fingerprint64) for words
outside the vocabulary. `TextTokenizer.vocabulary_size` (`V + num_oov_buckets
+ 1`) is the `input_dim` of the token embedding.

Example:

```python
vocab = build_vocabulary(["Crack the eggs.", "Whisk the eggs!"], min_count=1)
save_vocabulary(vocab, "vocab.txt")
tokenizer = TextTokenizer(load_vocabulary("vocab.txt"), max_tokens=8)
ids = tokenizer(tf.constant([["crack EGGS", ""]]))  # int32 [1, 2, 8]
```
"""
import collections

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from vt_keras.errors import ConfigError, DataError

# \p{P}: punctuation, \p{S}: symbols (RE2 syntax).
_PUNCTUATION = r"[\p{P}\p{S}]+"
_BATCH = 1024


def normalize_text(strings):
    """Case-folds `strings` and turns punctuation into spaces (any shape)."""
    strings = tf_text.case_fold_utf8(tf.convert_to_tensor(strings, tf.string))
    return tf.strings.regex_replace(strings, _PUNCTUATION, " ")


def split_words(strings):
    """Normalised words of each string: `[...]` strings → ragged `[..., (words)]`."""
    return tf_text.WhitespaceTokenizer().tokenize(normalize_text(strings))


def build_vocabulary(captions, max_size=None, min_count=2):
    """Builds a word vocabulary from an iterable of caption strings.

    Words are counted after the same normalisation `TextTokenizer` applies,
    kept if seen at least `min_count` times, ordered by decreasing count (ties
    alphabetically, so the result is deterministic) and cut to `max_size`.

    Args:
      captions: an iterable of `str` or `bytes` (e.g. all training captions).
      max_size: the most words to keep, or `None` for all.
      min_count: the fewest occurrences a word needs to be kept.

    Returns:
      A list of distinct `str` tokens.
    """
    if max_size is not None and max_size < 1:
        raise ConfigError(f"build_vocabulary: max_size must be >= 1 or None, got {max_size}")
    if min_count < 1:
        raise ConfigError(f"build_vocabulary: min_count must be >= 1, got {min_count}")
    counts = collections.Counter()
    chunk = []

    def flush():
        if chunk:
            words = split_words(tf.constant(chunk, tf.string)).flat_values.numpy()
            counts.update(words.tolist())
            chunk.clear()

    for caption in captions:
        chunk.append(caption.encode("utf-8") if isinstance(caption, str) else bytes(caption))
        if len(chunk) >= _BATCH:
            flush()
    flush()
    kept = [(word, n) for word, n in counts.items() if n >= min_count]
    kept.sort(key=lambda item: (-item[1], item[0]))
    if max_size is not None:
        kept = kept[:max_size]
    return [word.decode("utf-8") for word, _ in kept]


def save_vocabulary(vocabulary, path):
    """Writes `vocabulary` to `path`, one token per line (UTF-8)."""
    _check_vocabulary(vocabulary, "save_vocabulary")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(token + "\n" for token in vocabulary))


def load_vocabulary(path):
    """Reads a vocabulary file written by `save_vocabulary`; returns a list of str."""
    if not tf.io.gfile.exists(path):
        raise DataError(f"vocabulary file {path} does not exist")
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read().decode("utf-8")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    for line, token in enumerate(tokens, start=1):
        if not token or token != token.strip() or any(c.isspace() for c in token):
            raise DataError(
                f"vocabulary file {path}, line {line}: expected one token without "
                f"whitespace, found {token!r}"
            )
    _check_vocabulary(tokens, f"vocabulary file {path}", error=DataError)
    return tokens


def _check_vocabulary(vocabulary, where, error=ConfigError):
    if isinstance(vocabulary, (str, bytes)):
        raise error(f"{where}: expected a list of tokens, found a single string")
    seen = set()
    for token in vocabulary:
        if not isinstance(token, str) or not token:
            raise error(f"{where}: expected non-empty str tokens, found {token!r}")
        if token in seen:
            raise error(f"{where}: expected distinct tokens, found {token!r} twice")
        seen.add(token)
    if not seen:
        raise error(f"{where}: expected at least one token, found none")


@keras.saving.register_keras_serializable(package="vt_keras")
class TextTokenizer(keras.layers.Layer):
    """Maps raw caption strings to padded word ids, in the graph.

    The vocabulary is part of the layer's config (a list), so a `.keras` file
    carries it, and the lookup table is a tracked resource of the layer, so a
    SavedModel export carries it too.

    Args:
      vocabulary: a list of distinct tokens (e.g. from `load_vocabulary`).
      max_tokens: ids per string; longer strings are truncated, shorter padded
        with 0.
      num_oov_buckets: hash buckets for words outside the vocabulary.

    Call:
      inputs: string tensor of any shape `[...]`.
      Returns: int32 `[..., max_tokens]`; 0 = padding.

    Example:

    ```python
    tokenizer = TextTokenizer(["crack", "eggs"], max_tokens=4)
    tokenizer(tf.constant(["Crack eggs!", "crack"]))  # [[1, 2, 0, 0], [1, 0, 0, 0]]
    ```
    """

    def __init__(self, vocabulary, max_tokens=16, num_oov_buckets=8, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if not isinstance(vocabulary, (str, bytes)):
            vocabulary = list(vocabulary)
        _check_vocabulary(vocabulary, "TextTokenizer vocabulary")
        if max_tokens < 1:
            raise ConfigError(f"TextTokenizer: max_tokens must be >= 1, got {max_tokens}")
        if num_oov_buckets < 1:
            raise ConfigError(
                f"TextTokenizer: num_oov_buckets must be >= 1, got {num_oov_buckets}"
            )
        self.vocabulary = vocabulary
        self.max_tokens = int(max_tokens)
        self.num_oov_buckets = int(num_oov_buckets)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.lookup_table = tf.lookup.StaticVocabularyTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary, tf.string),
                tf.range(len(vocabulary), dtype=tf.int64),
            ),
            num_oov_buckets=self.num_oov_buckets,
        )
        self.built = True

    @property
    def vocabulary_size(self):
        """Number of distinct ids, padding and OOV buckets included."""
        return len(self.vocabulary) + self.num_oov_buckets + 1

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs, tf.string)
        flat = tf.reshape(inputs, [-1])
        words = split_words(flat)[:, : self.max_tokens]
        # The table numbers words from 0 and OOV buckets after them; shifting
        # everything by one frees 0 for padding.
        ids = words.with_flat_values(self.lookup_table.lookup(words.flat_values) + 1)
        ids = ids.to_tensor(default_value=0, shape=[None, self.max_tokens])
        out_shape = tf.concat([tf.shape(inputs), [self.max_tokens]], axis=0)
        return tf.reshape(tf.cast(ids, tf.int32), out_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.max_tokens,)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary": list(self.vocabulary),
                "max_tokens": self.max_tokens,
                "num_oov_buckets": self.num_oov_buckets,
            }
        )
        return config

