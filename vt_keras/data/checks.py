"""In-graph data checks of tf.data pipelines, surfaced as one-line `DataError`s.

tf.data raises errors while a pipeline is iterated, as TensorFlow `OpError`s
whose text says nothing useful to a user (which file? which key?). So the
readers check their data in the graph, where the file name is at hand, and a
failed check raises an `OpError` carrying one marked line. Run the iteration
under `data_errors()`, or loop with `iterate(dataset)`, and that line becomes
a `vt_keras.errors.DataError`:

    with data_errors():
        for batch in frame_dataset("train-*.tfrecord", 32):
            ...
    # DataError: file 'train-00003.tfrecord', record 'ab12': feature list
    #   'rgb' expected 1024 bytes per frame, found 1000

The same works around a `tf.function` step that pulls from the iterator:
the marked line survives in the step's error message.

A parser runs its checks in one conditional (`gate`), since tf.data pays
for every node of a map function on each call. The frame parser builds a
failure's message only when the error is read: its error carries a marked
token, and `data_errors()` re-runs the parser on the failing batch eagerly
to get the message (see `gate`).

`read_checked_records` reads one TFRecord file and detects damage that
`TFRecordDataset` would report without the file name: a sentinel after the
last readable block of records compares the bytes consumed with the file
size.

Problems the readers tolerate (skipped corrupt files, frame counts that
disagree between features) are counted in `data_counters()` and logged with
absl logging (the first ten of each kind, then every thousandth).
"""
import codecs
import collections
import contextlib
import itertools
import re
import threading
import typing

import numpy as np
import tensorflow as tf
from absl import logging

from vt_keras.errors import DataError

# A TFRecord frame is 8 bytes of length, 4 of length CRC, the data, 4 of CRC.
_TFRECORD_OVERHEAD = 16
_MARK = re.compile(r"<DataError>(.*?)</DataError>", re.S)
_COUNTERS = collections.Counter()
_LOCK = threading.Lock()
# Failed batches whose message is built on demand (see `gate`): token -> eager re-check.
_RECHECK_MARK = re.compile(r"<DataRecheck (\d+)>")
_RECHECKS = collections.OrderedDict()
_TOKENS = itertools.count()
_MAX_RECHECKS = 8


def data_counters():
    """Counts of tolerated data problems seen so far in this process, by kind."""
    with _LOCK:
        return dict(_COUNTERS)


def reset_data_counters():
    """Sets every count of `data_counters()` back to zero."""
    with _LOCK:
        _COUNTERS.clear()


def _count(kind, message):
    kind, message = kind.numpy().decode(), message.numpy().decode("utf-8", "replace")
    with _LOCK:
        _COUNTERS[kind] += 1
        n = _COUNTERS[kind]
    if n <= 10 or n % 1000 == 0:
        logging.warning("%s (%s #%d)", message, kind, n)
    return np.int32(0)


def report(kind, message):
    """In-graph: counts a tolerated problem of `kind` and logs `message`; returns int32 0."""
    return tf.py_function(_count, [kind, message], Tout=tf.int32)


def fail(message, unless=False):
    """In-graph: raises an `OpError` that `data_errors()` turns into `DataError(message)`, unless `unless` holds.

    Returns an int32 to put in a control dependency.
    """
    check = tf.debugging.Assert(unless, [tf.strings.join(["<DataError>", message, "</DataError>"])])
    with tf.control_dependencies([check]):
        return tf.constant(0, tf.int32)


class RowCheck(typing.NamedTuple):
    """A deferred in-graph check: `passed` (scalar bool) and `on_failure()`, graph code run only when it is False.

    Made by `assert_rows` and `report_if`; `gate` runs a parser's checks
    together.
    """

    passed: tf.Tensor
    on_failure: typing.Callable[[], tf.Tensor]


def assert_rows(ok, where, detail_fn):
    """A deferred check of `ok` [B]; when it fails, the error is `where[i]: detail_fn(i)` for the first bad row i.

    Returns a `RowCheck`; pass the checks of a batch to `gate`. The message
    is built only when a row fails.
    """

    def failed():
        i = tf.argmin(tf.cast(ok, tf.int32), output_type=tf.int32)
        return fail(tf.strings.join([where[i], ": ", detail_fn(i)]))

    return RowCheck(tf.reduce_all(ok), failed)


def report_if(problem, kind, message_fn):
    """A deferred tolerated problem: when `problem` (scalar bool) holds, `report(kind, message_fn())`."""
    return RowCheck(tf.logical_not(problem), lambda: report(kind, message_fn()))


def gate(row_checks, recheck=None):
    """Runs `RowCheck`s in one conditional; returns an int32 to put in a control dependency.

    On good data the cost is the checks' `passed` flags and one `tf.cond`.
    When a flag is False, the checks run in order: the first failing one
    raises its error, tolerated problems are reported. tf.data makes every
    node of a map function cost on each call, in an untaken branch too
    (about ten times a directly called `tf.function`'s cost per node,
    measured by `bench/input_pipeline.py`), so a parser whose messages are
    built in the graph pays for them on every batch. With `recheck=(fn, inputs)`
    the failure branch is one `tf.py_function` instead, which keeps the
    inputs' values and fails with a marked line; `data_error_message` (so
    `data_errors()` and `iterate()`) then calls `fn(*values)` eagerly,
    outside tf.data: `fn` re-runs the parser with its messages in the graph
    (`gate` without `recheck`) and raises the same error the in-graph path
    would. (Running TensorFlow ops inside the callback itself can deadlock
    a training step that waits on the pipeline.) Only failures belong in a
    gate with `recheck`: a tolerated problem (`report_if`) must be gated
    apart. SavedModel exports cannot hold a Python callback: they build
    without `recheck`.
    """
    row_checks = list(row_checks)
    if not row_checks:
        return tf.constant(0, tf.int32)

    def run_in_order():
        done = tf.constant(0, tf.int32)
        for check in row_checks:
            with tf.control_dependencies([done]):
                done = tf.cond(check.passed, lambda: tf.constant(0, tf.int32), check.on_failure)
        return done

    def call_back():
        fn, inputs = recheck
        return tf.reshape(tf.py_function(lambda *values: _defer_recheck(fn, values), list(inputs), Tout=tf.int32), [])

    passed = tf.reduce_all(tf.stack([check.passed for check in row_checks]))
    return tf.cond(passed, lambda: tf.constant(0, tf.int32), run_in_order if recheck is None else call_back)


# Records per block of `read_checked_records`' bookkeeping: one check per block instead of one per
# record (a tf.data function call per record cost more than the read itself).
CHECK_BLOCK = 16


def read_checked_records(filename, size, skip_corrupt):
    """A dataset of `(record, filename)` of one TFRecord file, checked against its `size` in bytes.

    `ignore_errors` ends a file's records at the first unreadable one; the
    records are counted in blocks of `CHECK_BLOCK`, and an empty sentinel
    block after the last one compares the bytes consumed with the file
    size, so damage is reported (or counted) rather than hidden. The records
    come out one by one, in file order.
    """
    size = tf.cast(size, tf.int64)
    blocks = tf.data.TFRecordDataset(filename).ignore_errors().batch(CHECK_BLOCK)
    # `batch` never yields an empty block: the empty one is the sentinel.
    blocks = blocks.concatenate(tf.data.Dataset.from_tensors(tf.constant([], tf.string)))

    def message(consumed, count):
        return tf.strings.join([
            "file '", filename, "' is truncated or corrupt: TFRecord data unreadable from byte ",
            tf.as_string(consumed), " of ", tf.as_string(size), " (after ", tf.as_string(count), " records)"])

    def step(state, records):
        consumed, count = state
        consumed += tf.reduce_sum(tf.cast(tf.strings.length(records), tf.int64) + _TFRECORD_OVERHEAD)
        count += tf.cast(tf.size(records), tf.int64)
        intact = tf.logical_or(tf.size(records) > 0, tf.equal(consumed, size))
        if skip_corrupt:
            check = tf.cond(intact, lambda: tf.constant(0, tf.int32), lambda: report(
                "skipped_corrupt_files", tf.strings.join([message(consumed, count), "; skipping the rest"])))
        else:
            # A conditional assert rather than a cond: no nested function call per block.
            check = fail(message(consumed, count), unless=intact)
        with tf.control_dependencies([check]):
            return (consumed, count), (tf.identity(records), tf.fill(tf.shape(records), filename))

    zero = tf.constant(0, tf.int64)
    return blocks.scan((zero, zero), plain(step)).unbatch()


def plain(fn):
    """Returns `fn` exempt from autograph (for tf.data functions that use explicit tf.cond)."""
    # Converting such functions gains nothing and slows tracing severalfold.
    return tf.autograph.experimental.do_not_convert(fn)


def _defer_recheck(fn, values):
    """In a `gate`'s failure callback: keeps `fn` and the batch for `data_error_message`, then fails."""
    values = [v.numpy() for v in values]
    with _LOCK:
        token = next(_TOKENS)
        _RECHECKS[token] = lambda: fn(*values)
        while len(_RECHECKS) > _MAX_RECHECKS:  # failures nobody read: keep memory bounded
            _RECHECKS.pop(next(iter(_RECHECKS)))
    raise tf.errors.InvalidArgumentError(None, None, (
        f"<DataRecheck {token}> a record of this batch failed a data check; read the data under "
        "vt_keras.data.data_errors() or with vt_keras.data.iterate() for the message"))


def _run_recheck(token):
    """The marked message of a deferred failure (see `gate`), from re-running its check eagerly."""
    with _LOCK:
        recheck = _RECHECKS.pop(token, None)
    if recheck is None:
        return None
    try:
        recheck()
    except tf.errors.OpError as e:
        return data_error_message(e)
    return "a record failed a data check that passed when re-run (a bug: please report it)"


def data_error_message(error):
    """The one-line message marked inside a TensorFlow error, or None."""
    text = getattr(error, "message", None) or str(error)
    deferred = _RECHECK_MARK.search(text)
    if deferred is not None:
        return _run_recheck(int(deferred.group(1)))
    match = _MARK.search(text)
    if match is None:
        return None
    # Assert C-escapes quotes, backslashes and non-ASCII bytes of its data.
    return codecs.escape_decode(match.group(1).encode("utf-8"))[0].decode("utf-8", "replace")


@contextlib.contextmanager
def data_errors():
    """Turns data check failures raised by TensorFlow into `DataError`.

    Other TensorFlow errors pass unchanged, except unreadable record data
    (`DataLossError`, protos that do not parse), which becomes a `DataError`
    quoting TensorFlow's last line.

    Example:
        >>> with data_errors():
        ...     for batch in frame_dataset("train*.tfrecord", 32):
        ...         train_step(batch)
    """
    try:
        yield
    except tf.errors.OpError as e:
        message = data_error_message(e)
        if message is not None:
            raise DataError(message) from None
        if isinstance(e, tf.errors.DataLossError) or "could not parse" in e.message.lower():
            last = [line for line in e.message.strip().splitlines() if line.strip()]
            raise DataError(f"unreadable record data: {last[-1].strip() if last else e}") from None
        raise


def iterate(dataset):
    """Yields the elements of `dataset`, raising `DataError` for bad data.

    Example:
        >>> for batch in iterate(frame_dataset("validate-*.tfrecord", 64)):
        ...     evaluate(batch)
    """
    with data_errors():
        yield from dataset


def describe_record(record):
    """In-graph: what one serialized record holds, for error messages (a string scalar).

    Tells a frame-level record (a `tf.train.SequenceExample`: context keys and
    feature lists) from a video-level one (a `tf.train.Example`: keys only;
    parsed as a SequenceExample it has a context and no feature lists), e.g.
    "the record has keys 'id', 'labels', 'mean_rgb' and no feature lists (a
    video-level tf.train.Example)". Run only where a check failed.
    """
    record = tf.reshape(record, [1])
    sizes, (context, lists) = tf.io.decode_proto(record, "tensorflow.SequenceExample", ["context", "feature_lists"],
                                                 [tf.string, tf.string])

    def keys(message, present, message_type, entry_type, field):
        # decode_proto pads absent fields with a default value: keep only what `sizes` counts.
        count, (entries,) = tf.io.decode_proto(tf.reshape(message, [1]), message_type, [field], [tf.string])
        # One empty entry more: decode_proto refuses an empty batch.
        entries = tf.concat([entries[0, :count[0, 0]], [""]], axis=0)
        _, (names,) = tf.io.decode_proto(entries, entry_type, ["key"], [tf.string])
        quoted = tf.strings.join(["'", names[:-1, 0], "'"])
        text = tf.strings.reduce_join(quoted, separator=", ")
        return tf.where(present, text, "")

    context_keys = keys(context[0, 0], sizes[0, 0] > 0, "tensorflow.Features", "tensorflow.Features.FeatureEntry",
                        "feature")
    list_keys = keys(lists[0, 0], sizes[0, 1] > 0, "tensorflow.FeatureLists",
                     "tensorflow.FeatureLists.FeatureListEntry", "feature_list")
    context_text = tf.where(tf.strings.length(context_keys) > 0, context_keys, "none")
    frame_level = tf.strings.join(["the record has context keys ", context_text, " and feature lists ", list_keys,
                                   " (a frame-level tf.train.SequenceExample)"])
    video_level = tf.strings.join(["the record has keys ", context_keys,
                                   " and no feature lists (a video-level tf.train.Example)"])
    has_lists, has_keys = tf.strings.length(list_keys) > 0, tf.strings.length(context_keys) > 0
    return tf.where(has_lists, frame_level, tf.where(has_keys, video_level, "the record is empty (no keys)"))
