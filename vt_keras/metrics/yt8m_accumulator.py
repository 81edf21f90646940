"""`YT8MMetrics`: the YouTube-8M metrics accumulated over batches, overall and per level.

The per-level protocol is that of Goyal et al., "Cross-modal learning for
multi-modal video categorization" (Sec. 5.2); the metric definitions and the
tie rule are those of `metrics/yt8m.py`, whose functions give the same numbers
on the concatenated batches.
"""
import numpy as np

from vt_keras.errors import ConfigError, DataError
from vt_keras.metrics.yt8m import (
    _check_inputs,
    _check_top_k,
    _check_weights,
    _mean_of_aps,
    _per_class_ap,
    _pooled_ap,
    _video_stats,
)

_METRICS = ("hit_at_one", "perr", "gap", "map")


def _level_classes(taxonomy, num_classes):
    """`taxonomy` as {level: sorted class ids}; see `YT8MMetrics`."""
    if taxonomy is None:
        return {}
    if hasattr(taxonomy, "items"):
        pairs = [(lvl, np.asarray(list(ids))) for lvl, ids in taxonomy.items()]
    else:
        levels = np.asarray(taxonomy)
        if levels.shape != (num_classes,) or not np.issubdtype(levels.dtype, np.integer):
            raise ConfigError(
                f"taxonomy must be an int array of {num_classes} level ids (or a mapping "
                f"level -> class ids); found dtype {levels.dtype}, shape {levels.shape}."
            )
        pairs = [(lvl, np.flatnonzero(levels == lvl)) for lvl in np.unique(levels[levels >= 0])]
    out = {}
    for lvl, ids in pairs:
        if ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ConfigError(f"taxonomy level {lvl} must list integer class ids; found {ids!r}.")
        if ids.min() < 0 or ids.max() >= num_classes:
            raise ConfigError(
                f"taxonomy level {lvl} has class ids outside [0, {num_classes}); "
                f"found {ids.min()}..{ids.max()}."
            )
        out[lvl] = np.unique(ids)
    return out


class _Stream:
    """Per-video Hit@1/PERR and top-k (class, score, label) of one scope."""

    def __init__(self, num_classes, top_k):
        self.num_classes, self.top_k = num_classes, top_k
        self.hits, self.perrs, self.classes, self.scores, self.labels = [], [], [], [], []
        self.class_positives = np.zeros(num_classes, np.int64)

    def update(self, predictions, labels, rated=None):
        """Adds a batch; returns `(rows, classes)` of every kept top-k entry (for the level filter)."""
        if rated is None:
            classes, scores, top_labels, hits, perrs = _video_stats(predictions, labels, self.top_k)
            rows = np.repeat(np.arange(classes.shape[0]), classes.shape[1])
            self.class_positives += labels.sum(axis=0)
        else:
            rows, classes, scores, top_labels, hits, perrs, positives = _rated_video_stats(
                predictions, labels, rated, self.top_k)
            self.class_positives += np.bincount(positives, minlength=self.num_classes)
        self.hits.append(hits)
        self.perrs.append(perrs)
        self.classes.append(classes.astype(np.int32).ravel())
        self.scores.append(scores.ravel())
        self.labels.append(top_labels.ravel())
        return rows, classes.ravel()

    def result(self, filter_empty_classes):
        hits = np.concatenate(self.hits) if self.hits else np.zeros(0)
        if hits.size == 0:
            return dict({m: float("nan") for m in _METRICS}, num_videos=0)
        scores, labels = np.concatenate(self.scores), np.concatenate(self.labels)
        aps = _per_class_ap(np.concatenate(self.classes), scores, labels, self.class_positives)
        return {
            "hit_at_one": float(np.mean(hits)),
            "perr": float(np.mean(np.concatenate(self.perrs))),
            "gap": _pooled_ap(scores, labels, int(self.class_positives.sum())),
            "map": _mean_of_aps(aps, self.class_positives, filter_empty_classes),
            "num_videos": int(hits.size),
        }


def _rated_video_stats(predictions, labels, rated, k):
    """`_video_stats` over the rated entries only (a sparse list; rows without one are left out).

    Returns the kept top-k entries as flat `rows, classes, scores, labels`,
    Hit@1 and PERR of every row with a rated entry, and the class ids of all
    rated positives.
    """
    n = predictions.shape[0]
    rows, classes = np.nonzero(rated)
    scores, y = predictions[rows, classes], labels[rows, classes]
    # Row by row, best first under the module's tie rule (negatives, then lower class ids, first).
    order = np.lexsort((classes, y.astype(np.int8), -scores, rows))
    rows, classes, scores, y = rows[order], classes[order], scores[order], y[order]
    counts = np.bincount(rows, minlength=n)
    rank = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    num_pos = np.bincount(rows[y], minlength=n)
    hits = y[rank == 0].astype(np.float64)
    found = np.bincount(rows[y & (scores > 0) & (rank < num_pos[rows])], minlength=n)
    perrs = (found / np.maximum(num_pos, 1))[counts > 0]
    top = rank < k
    return rows[top], classes[top], scores[top], y[top], hits, perrs, classes[y]


class YT8MMetrics:
    """Accumulates YouTube-8M metrics over batches, overall and per level.

    Gives exactly the numbers of `hit_at_one`, `perr`, `gap` and
    `mean_average_precision` on the concatenated batches, keeping only each
    video's top-k (class, score, label) as numpy arrays: O(num_videos * top_k).

    Per level (Goyal et al., Sec. 5.2): the metrics of level `l` are those of
    the predictions and labels restricted to the classes of `l`, over the
    videos that have a ground-truth label of `l` or a class of `l` among
    their overall top-k predictions; the other videos are left out. (The
    paper does not define "prediction"; the overall top-k is our reading.)

    Args:
        num_classes: number of classes C.
        top_k: predictions kept per video for GAP and MAP (Kaggle: 20).
        taxonomy: optional levels: an int array `[C]` of level ids (e.g. 0..3;
            negative means the class belongs to no level), or a mapping
            level -> class ids (a class may then sit in several levels).
        filter_empty_classes: MAP convention, see `mean_average_precision`.

    Label weights (`update(..., label_weights)`, 0/1 `[batch, C]`): only
    the entries of weight 1 exist for the metrics, as the loss of
    `vt_keras.tasks.yt8m` counts only them. A video's Hit@1, PERR and top k
    are taken over its weighted classes, a positive of weight 0 is no
    positive, and a video without any weighted class is left out. With one
    weighted class per row (the rated (segment, class) pairs of
    `vt_keras.data.segments.segment_dataset`) each class's AP runs over the
    scores of its rated segments, which is the 2019 challenge's MAP
    (`vt_keras.metrics.segments.segment_map`) of a submission that lists
    every segment by score (equal scores aside), and `num_videos` counts the
    rated pairs.

    Call: `update(predictions, labels, label_weights=None)` with `[batch, C]`
    scores and 0/1 labels; `result()` -> dict of `hit_at_one`, `perr`, `gap`, `map`, error
    rates `*_error` = 100 - 100 * metric, `num_videos`, and all of them again
    under `level_<l>/` for each level.

    Example:
        >>> m = YT8MMetrics(num_classes=4, top_k=20, taxonomy=[0, 0, 1, 1])
        >>> m.update(np.random.rand(8, 4), np.eye(4)[np.arange(8) % 4])
        >>> print(format_table(m.result()))  # doctest: +SKIP
    """

    def __init__(self, num_classes, top_k=20, taxonomy=None, filter_empty_classes=True):
        self.num_classes = _check_top_k(num_classes, "num_classes")
        self.top_k = _check_top_k(top_k)
        self.taxonomy = taxonomy
        self.filter_empty_classes = filter_empty_classes
        self._levels = _level_classes(taxonomy, self.num_classes)
        self._in_level = {}
        for lvl, ids in self._levels.items():
            self._in_level[lvl] = np.zeros(self.num_classes, bool)
            self._in_level[lvl][ids] = True
        self.reset()

    def reset(self):
        """Forgets every batch seen so far."""
        self._overall = _Stream(self.num_classes, self.top_k)
        self._per_level = {lvl: _Stream(ids.size, self.top_k) for lvl, ids in self._levels.items()}

    def update(self, predictions, labels, label_weights=None):
        """Adds a batch of `[batch, C]` scores and 0/1 labels (and 0/1 label weights: see the class)."""
        predictions, labels = _check_inputs(predictions, labels)
        if predictions.shape[1] != self.num_classes:
            raise DataError(
                f"predictions must have num_classes={self.num_classes} columns; "
                f"found {predictions.shape[1]}."
            )
        rated = None if label_weights is None else _check_weights(label_weights, predictions.shape)
        if rated is not None:
            labels = labels & rated
        rows, classes = self._overall.update(predictions, labels, rated)
        for lvl, ids in self._levels.items():
            keep = labels[:, ids].any(axis=1)
            keep[rows[self._in_level[lvl][classes]]] = True
            if keep.any():
                grid = np.ix_(np.flatnonzero(keep), ids)
                self._per_level[lvl].update(predictions[grid], labels[grid],
                                            None if rated is None else rated[grid])

    def result(self):
        """The metrics so far as a dict of floats (see the class docstring)."""
        scopes = [("", self._overall)]
        scopes += [(f"level_{lvl}/", stream) for lvl, stream in self._per_level.items()]
        out = {}
        for prefix, stream in scopes:
            values = stream.result(self.filter_empty_classes)
            if values["num_videos"] == 0 and not prefix:
                raise DataError("YT8MMetrics.result() needs at least one video; none was added.")
            for name in _METRICS:
                out[prefix + name] = values[name]
                out[prefix + name + "_error"] = 100.0 - 100.0 * values[name]
            out[prefix + "num_videos"] = values["num_videos"]
        return out


def format_table(results):
    """Renders a `YT8MMetrics.result()` dict as a text table, in percent.

    One row overall and one per level; metric columns, then error-rate
    columns (100 - metric%), as the papers' tables report them.

    Example:
        >>> print(format_table(YT8MMetrics(...).result()))  # doctest: +SKIP
    """
    levels = {k.split("/")[0] + "/" for k in results if k.startswith("level_") and "/" in k}
    prefixes = [p for p in [""] + sorted(levels) if any(p + m in results for m in _METRICS)]
    if not prefixes:
        raise DataError(
            f"format_table needs YT8MMetrics.result() keys such as 'gap'; found {sorted(results)}."
        )
    names = ("Hit@1", "PERR", "GAP", "MAP")

    def cell(value, width):
        return "-".rjust(width) if value is None or np.isnan(value) else f"{value:{width}.2f}"

    header = f"{'scope':<10}{'videos':>9} |" + "".join(f"{n:>8}" for n in names) + " |"
    header += "".join(f"{n + ' err':>11}" for n in names)
    lines = [header, "-" * len(header)]
    for prefix in prefixes:
        label = "overall" if not prefix else prefix[:-1].replace("_", " ")
        row = f"{label:<10}{results.get(prefix + 'num_videos', '-'):>9} |"
        row += "".join(cell(100.0 * results.get(prefix + m, np.nan), 8) for m in _METRICS) + " |"
        row += "".join(cell(results.get(prefix + m + "_error"), 11) for m in _METRICS)
        lines.append(row)
    return "\n".join(lines)
