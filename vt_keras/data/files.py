"""Listing the files of a data pattern: the one implementation every reader and binary uses."""
import tensorflow as tf

from vt_keras.errors import DataError

__all__ = ["list_files", "split_patterns"]


def split_patterns(file_pattern):
    """The patterns of `file_pattern`: a string of comma-separated globs, or a list/tuple of them."""
    items = [file_pattern] if isinstance(file_pattern, (str, bytes)) else list(file_pattern)
    patterns = []
    for item in items:
        item = item.decode() if isinstance(item, bytes) else str(item)
        patterns.extend(p.strip() for p in item.split(",") if p.strip())
    return patterns


def list_files(file_pattern, kind="TFRecord file"):
    """Sorted, distinct files matching every pattern of `file_pattern`.

    Args:
        file_pattern: a glob (`data/train-*.tfrecord`), several separated by
            commas, or a list of globs or file names. Any filesystem
            `tf.io.gfile` knows (local, `gs://`, ...) works.
        kind: what the files are, for the error message.

    Returns:
        A sorted list of file names.

    Raises:
        DataError: no pattern was given, or one pattern matches no file (the
            message names that pattern; a typo in one of several patterns is
            not hidden by the others).

    Example:
        >>> list_files("data/train-*.tfrecord,data/extra.tfrecord")
        ['data/extra.tfrecord', 'data/train-00000-of-00002.tfrecord', 'data/train-00001-of-00002.tfrecord']
    """
    patterns = split_patterns(file_pattern)
    if not patterns:
        raise DataError(f"file pattern {file_pattern!r}: expected a glob pattern such as "
                        "'data/train-*.tfrecord', found nothing")
    files = set()
    for pattern in patterns:
        matched = tf.io.gfile.glob(pattern)
        if not matched:
            raise DataError(f"file pattern '{pattern}' matches no files; expected at least one {kind}")
        files.update(matched)
    return sorted(files)
