"""The 2019 YouTube-8M segment challenge's submission: per-class streaming top-K, the CSV format, class lists.

A submission is a CSV with the header `Class,Segments` and one row per
class: the class id, a comma, and its segment ids `videoid:start` separated
by single spaces, best first:

    Class,Segments
    3,Xb1vd2a8:15 K2zoL0e1:0 Xb1vd2a8:20
    17,K2zoL0e1:35

`SegmentTopK` keeps each class's best K segments as scores stream in, so
memory stays bounded by K per class however many videos there are.
"""
import csv
import io

import numpy as np

from vt_keras.errors import ConfigError, DataError

__all__ = ["HEADER", "SegmentTopK", "read_segment_classes", "read_submission", "write_submission"]

HEADER = ("Class", "Segments")


def _top_k(scores, keys, k):
    """The k best of `scores` (1-D), ties broken by the smaller key; unordered."""
    if scores.size <= k:
        return scores, keys
    kth = np.partition(scores, scores.size - k)[scores.size - k]  # the k-th largest value
    above = np.flatnonzero(scores > kth)
    ties = np.flatnonzero(scores == kth)
    ties = ties[np.argsort(keys[ties], kind="stable")[:k - above.size]]
    keep = np.concatenate([above, ties])
    return scores[keep], keys[keep]


class SegmentTopK:
    """Per-class top-K of segment scores, streamed in batches with bounded memory.

    Each class keeps at most `k` (score, key) pairs plus a buffer of at most
    `buffer_size` pending rows; a segment's id string is kept only while
    some class still holds it. Ranking: higher score first; equal scores in
    the order the segments were added (earlier first), so the result does
    not depend on how the stream was batched.

    Args:
        classes: the class ids to keep (columns of the scores given to `add`).
        k: segments kept per class (the challenge: 100,000).
        buffer_size: pending rows before a reduction (default `max(k // 2, 8192)`).

    Example:
        >>> top = SegmentTopK(classes=[3, 17], k=2)
        >>> top.add(["a:0", "a:5", "b:0"], np.array([[.9, .1], [.2, .8], [.9, .7]]))
        >>> {c: [segment for segment, _ in pairs] for c, pairs in top.ranked().items()}
        {3: ['a:0', 'b:0'], 17: ['a:5', 'b:0']}
    """

    def __init__(self, classes, k, buffer_size=None):
        self.classes = [int(c) for c in classes]
        if not self.classes:
            raise ConfigError("segment classes: expected at least one class id, found none")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ConfigError(f"top_segments: expected a positive integer, found {k!r}")
        self.k = int(k)
        self.buffer_size = int(buffer_size or max(self.k // 2, 8192))
        num = len(self.classes)
        self._scores = [np.zeros(0, np.float32) for _ in range(num)]
        self._keys = [np.zeros(0, np.int64) for _ in range(num)]
        self._pending_scores, self._pending_keys, self._pending = [], [], 0
        self._ids = {}  # key -> segment id, for keys some class may still hold
        self._next_key = 0

    @property
    def held(self):
        """Largest number of (score, key) pairs any class holds now, pending rows included."""
        return max(s.size for s in self._scores) + self._pending

    @property
    def num_ids(self):
        """Segment id strings held now."""
        return len(self._ids)

    def add(self, segment_ids, scores):
        """Adds a batch: `segment_ids` (S strings) and `scores` `[S, len(classes)]`."""
        scores = np.asarray(scores, np.float32)
        if scores.ndim != 2 or scores.shape != (len(segment_ids), len(self.classes)):
            raise DataError(f"scores: expected shape [{len(segment_ids)}, {len(self.classes)}], "
                            f"found {list(scores.shape)}")
        keys = np.arange(self._next_key, self._next_key + len(segment_ids), dtype=np.int64)
        self._next_key += len(segment_ids)
        self._ids.update(zip(keys.tolist(), segment_ids))
        self._pending_scores.append(scores)
        self._pending_keys.append(keys)
        self._pending += len(segment_ids)
        if self._pending >= self.buffer_size:
            self._reduce()

    def _reduce(self):
        if not self._pending:
            return
        scores = np.concatenate(self._pending_scores)
        keys = np.concatenate(self._pending_keys)
        self._pending_scores, self._pending_keys, self._pending = [], [], 0
        for j in range(len(self.classes)):
            self._scores[j], self._keys[j] = _top_k(np.concatenate([self._scores[j], scores[:, j]]),
                                                    np.concatenate([self._keys[j], keys]), self.k)
        held = np.unique(np.concatenate(self._keys))
        self._ids = {key: self._ids[key] for key in held.tolist()}

    def ranked(self):
        """`{class_id: [(segment_id, score), ...]}`, best first, at most k per class."""
        self._reduce()
        out = {}
        for c, scores, keys in zip(self.classes, self._scores, self._keys):
            order = np.lexsort((keys, -scores))
            out[c] = [(self._ids[int(keys[i])], float(scores[i])) for i in order]
        return out


def write_submission(path, ranked):
    """Writes `{class_id: [segment_id or (segment_id, score), ...]}` (best first) as the challenge's CSV.

    Classes are written in ascending order; a class without segments gets an
    empty list. Returns the number of rows.

    Example:
        >>> write_submission("submission.csv", {3: ["Xb1vd2a8:15", "K2zoL0e1:0"]})
        1
    """
    with open(path, "w", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        for c in sorted(ranked):
            items = [item[0] if isinstance(item, tuple) else item for item in ranked[c]]
            f.write(f"{int(c)},{' '.join(items)}\n")
    return len(ranked)


def read_submission(path):
    """Reads a submission CSV: `{class_id: [segment_id, ...]}`, best first, in file order.

    Raises:
        DataError: no such file, another header, a class id that is not a
            non-negative integer, a segment id that is not `videoid:start`,
            a class listed twice or a segment listed twice for one class
            (each names the line).
    """
    try:
        with open(path, newline="") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"submission '{path}': cannot be read ({e.strerror or e})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(x.strip() for x in rows[0]) != HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"submission '{path}', line 1: expected the header '{','.join(HEADER)}', found {found!r}")
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        where = f"submission '{path}', line {line}"
        if len(row) != 2:
            raise DataError(f"{where}: expected 'class_id,segment ids separated by spaces', found {len(row)} fields")
        try:
            c = int(row[0])
        except ValueError:
            c = -1
        if c < 0:
            raise DataError(f"{where}: expected a non-negative class id, found {row[0]!r}")
        if c in out:
            raise DataError(f"{where}: class {c} is listed a second time")
        segments = row[1].split()
        for segment in segments:
            video, sep, start = segment.rpartition(":")
            if not sep or not video or not start.isdigit():
                raise DataError(f"{where}: expected segment ids 'videoid:start', found {segment!r}")
        if len(set(segments)) != len(segments):
            seen, twice = set(), None
            for segment in segments:
                if segment in seen:
                    twice = segment
                    break
                seen.add(segment)
            raise DataError(f"{where}: class {c} lists segment {twice!r} twice")
        out[c] = segments
    return out


def read_segment_classes(path, num_classes=None):
    """The class ids of a file with one id per line and an optional header line (the starter code's
    `segment_label_ids.csv`), in file order.

    Raises:
        DataError: no such file, a line that is not a class id, a repeated id,
            an id >= `num_classes`, or no id at all.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"--segment_classes={path}: cannot be read ({e.strerror or e})") from None
    classes = []
    for number, line in enumerate(lines, start=1):
        text = line.strip().split(",")[0].strip()
        if not text:
            continue
        if not text.lstrip("-").isdigit():
            if number == 1:
                continue  # a header line
            raise DataError(f"--segment_classes={path}, line {number}: expected a class id, found {line.strip()!r}")
        c = int(text)
        if c < 0 or (num_classes is not None and c >= num_classes):
            bound = "" if num_classes is None else f" < {num_classes} (the export's classes)"
            raise DataError(f"--segment_classes={path}, line {number}: expected 0 <= class id{bound}, found {c}")
        if c in classes:
            raise DataError(f"--segment_classes={path}, line {number}: class {c} is listed twice")
        classes.append(c)
    if not classes:
        raise DataError(f"--segment_classes={path}: expected class ids, one per line, found none")
    return classes
