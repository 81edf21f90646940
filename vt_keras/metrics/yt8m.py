"""YouTube-8M metrics (numpy): Hit@1, PERR, GAP and MAP, overall and per level.

Definitions of the YouTube-8M starter code (Abu-El-Haija et al. 2016); the
per-level protocol of Goyal et al., "Cross-modal learning for multi-modal
video categorization".

Ties. The starter code shuffles (score, label) pairs with a fixed seed before
sorting, so the metric depends on that seed and on the order of the videos.
Here ties break deterministically and *pessimistically*: among equal scores a
negative ranks ahead of a positive, then the lower class index comes first.
That is the lowest value the shuffle could give; it does not depend on the
order of videos or batches, and constant scores are not rewarded. Hit@1 obeys
the same rule (the starter code's `argmax` takes the lowest tied class).
"""
import numpy as np

from vt_keras.errors import ConfigError, DataError


def _check_inputs(predictions, labels, needs_rows=None):
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 2:
        raise DataError(
            f"predictions must be 2-D [num_videos, num_classes]; found shape {predictions.shape}."
        )
    if labels.shape != predictions.shape:
        raise DataError(
            f"labels must have the shape of predictions {predictions.shape}; found {labels.shape}."
        )
    if needs_rows and predictions.shape[0] == 0:
        raise DataError(f"{needs_rows} needs at least one video; found 0 rows.")
    if not np.issubdtype(predictions.dtype, np.floating):
        predictions = predictions.astype(np.float64)
    if not np.all(np.isfinite(predictions)):
        raise DataError("predictions must be finite; found NaN or Inf.")
    if labels.dtype != bool and not np.all((labels == 0) | (labels == 1)):
        bad = labels[(labels != 0) & (labels != 1)][:3]
        raise DataError(f"labels must be 0/1 (or bool); found values such as {bad.tolist()}.")
    labels = labels != 0
    return predictions, labels


def _check_weights(weights, shape):
    """Label weights as a bool "rated" mask; they must be 0 or 1 and of the predictions' shape."""
    weights = np.asarray(weights)
    if weights.shape != shape:
        raise DataError(f"label_weights must have the shape of predictions {shape}; found {weights.shape}.")
    if not np.all((weights == 0) | (weights == 1)):
        bad = weights[(weights != 0) & (weights != 1)][:3]
        raise DataError(f"label_weights must be 0/1 (1: the entry counts); found values such as {bad.tolist()}.")
    return weights != 0


def _check_top_k(value, name="top_k"):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; found {value!r}.")
    return int(value)


def _top_k(scores, labels, k):
    """Class indices `[N, k]`, scores and labels of each row's top k, best first."""
    n, c = scores.shape
    k = min(k, c)
    if k == c:
        idx = np.broadcast_to(np.arange(c), (n, c))
    else:
        idx = np.argpartition(scores, c - k, axis=1)[:, c - k:]
        kth = np.take_along_axis(scores, idx, 1).min(axis=1)
        # Only rows with ties at the k-th score have a choice to make; only
        # those pay for a full sort under the tie rule.
        tied = np.count_nonzero(scores >= kth[:, None], axis=1) > k
        if tied.any():
            idx = idx.copy()
            t_scores, t_labels = scores[tied], labels[tied].astype(np.int8)
            cls = np.broadcast_to(np.arange(c), t_scores.shape)
            idx[tied] = np.lexsort((cls, t_labels, -t_scores), axis=-1)[:, :k]
    top_scores, top_labels = np.take_along_axis(scores, idx, 1), np.take_along_axis(labels, idx, 1)
    order = np.lexsort((idx, top_labels.astype(np.int8), -top_scores), axis=-1)
    return tuple(np.take_along_axis(a, order, 1) for a in (idx, top_scores, top_labels))


def _video_stats(predictions, labels, k):
    """Top-k triples with per-video Hit@1 and PERR, all from one partial sort."""
    num_pos = labels.sum(axis=1)
    # PERR of a video with K positives needs its top K: sort once, deep enough for all.
    classes, scores, top_labels = _top_k(predictions, labels, max(k, int(num_pos.max(initial=0))))
    hits = top_labels[:, 0].astype(np.float64)
    within = np.arange(classes.shape[1])[None, :] < num_pos[:, None]
    found = np.count_nonzero(top_labels & (scores > 0) & within, axis=1)
    perrs = np.where(num_pos > 0, found / np.maximum(num_pos, 1), 0.0)
    return classes[:, :k], scores[:, :k], top_labels[:, :k], hits, perrs


def _pooled_ap(scores, labels, num_positives):
    if num_positives == 0:
        return 0.0
    sorted_labels = labels[np.lexsort((labels.astype(np.int8), -scores))]
    precision = np.cumsum(sorted_labels) / np.arange(1, sorted_labels.size + 1)
    return float(np.sum(precision[sorted_labels]) / num_positives)


def _per_class_ap(classes, scores, labels, class_positives):
    """AP of every class over its pooled top-k entries; 0 where no positives."""
    num_classes = class_positives.size
    order = np.lexsort((labels.astype(np.int8), -scores, classes))
    cls, lab, counts = classes[order], labels[order], np.bincount(classes, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_class = np.arange(cls.size) - starts[cls] + 1
    cum_hits = np.cumsum(lab)
    hits_before = np.concatenate([[0], cum_hits])[starts]
    precision = (cum_hits - hits_before[cls]) / rank_in_class
    ap_sum = np.bincount(cls[lab], weights=precision[lab], minlength=num_classes)
    return np.where(class_positives > 0, ap_sum / np.maximum(class_positives, 1), 0.0)


def _mean_of_aps(aps, class_positives, filter_empty_classes):
    if filter_empty_classes:
        kept = aps[class_positives > 0]
        return float(np.mean(kept)) if kept.size else 0.0
    return float(np.sum(aps) / aps.size)


def hit_at_one(predictions, labels):
    """Fraction of videos whose top-scored class is a ground-truth label (ties: module doc).

    Args:
        predictions: `[num_videos, num_classes]` scores.
        labels: `[num_videos, num_classes]` 0/1 or bool ground truth.

    Example:
        >>> hit_at_one([[0.9, 0.1], [0.2, 0.8]], [[1, 0], [1, 0]])
        0.5
    """
    predictions, labels = _check_inputs(predictions, labels, "hit_at_one")
    return float(np.mean(_video_stats(predictions, labels, 1)[3]))


def perr(predictions, labels):
    """Precision at equal recall rate, averaged over videos.

    A video with `K` positives scores the fraction of its top-`K` classes that
    are positive and have a score above 0; a video without positives scores 0
    and still counts in the mean (as in the starter code). Returns a float in [0, 1].

    Args:
        predictions: `[num_videos, num_classes]` scores.
        labels: `[num_videos, num_classes]` 0/1 or bool ground truth.

    Example:
        >>> perr([[0.9, 0.5, 0.1]], [[1, 0, 1]])
        0.5
    """
    predictions, labels = _check_inputs(predictions, labels, "perr")
    return float(np.mean(_video_stats(predictions, labels, 1)[4]))


def average_precision(scores, labels, num_positives=None):
    """Non-interpolated average precision of one ranked list.

    `AP = (1 / num_positives) * sum_j y_j * precision@j` over the list sorted
    by descending score (ties: negatives first, see the module docstring).

    Args:
        scores: `[n]` scores.
        labels: `[n]` 0/1 or bool.
        num_positives: the denominator; defaults to the positives in `labels`.
            Pass a larger count when positives were cut off the list (GAP).
            With no positive at all the AP is 0.0.

    Example:
        >>> round(average_precision([0.9, 0.8, 0.7], [1, 0, 1]), 4)
        0.8333
    """
    scores, labels = (a[0] for a in _check_inputs([np.ravel(scores)], [np.ravel(labels)]))
    found = int(labels.sum())
    if num_positives is None:
        num_positives = found
    elif num_positives < found:
        raise DataError(
            f"num_positives must be >= the {found} positives in labels; found {num_positives}."
        )
    return _pooled_ap(scores, labels, num_positives)


def gap(predictions, labels, top_k=20):
    """Global average precision over each video's top-k predictions.

    The top `top_k` (score, label) pairs of every video are pooled into one
    list and its AP is taken with all positives of `labels` (also those
    outside the top k) as denominator; 0.0 without positives. `top_k` above
    the class count uses all classes.

    Args:
        predictions: `[num_videos, num_classes]` scores.
        labels: `[num_videos, num_classes]` 0/1 or bool ground truth.
        top_k: predictions kept per video (Kaggle: 20).

    Example:
        >>> gap([[0.9, 0.1], [0.2, 0.8]], [[1, 0], [1, 0]], top_k=1)
        0.5
    """
    predictions, labels = _check_inputs(predictions, labels)
    top_k = _check_top_k(top_k)
    _, top_scores, top_labels = _top_k(predictions, labels, top_k)
    return _pooled_ap(top_scores.ravel(), top_labels.ravel(), int(labels.sum()))


def mean_average_precision(predictions, labels, top_k=20, filter_empty_classes=True):
    """Mean over classes of the AP of each class's top-k-filtered entries.

    A class's list holds the videos that have it in their top `top_k`; its
    denominator is the class's total positives. With `filter_empty_classes`
    (the starter code) the mean runs over classes with at least one positive;
    without (the TensorFlow 2 port in tensorflow/models) it is the sum over
    all classes divided by `num_classes`. 0.0 when no class has a positive.

    Args:
        predictions: `[num_videos, num_classes]` scores.
        labels: `[num_videos, num_classes]` 0/1 or bool ground truth.
        top_k: predictions kept per video.
        filter_empty_classes: see above.

    Example:
        >>> mean_average_precision([[0.9, 0.1], [0.2, 0.8]], [[1, 0], [0, 1]], top_k=1)
        1.0
    """
    predictions, labels = _check_inputs(predictions, labels)
    top_k = _check_top_k(top_k)
    classes, top_scores, top_labels = _top_k(predictions, labels, top_k)
    class_positives = labels.sum(axis=0)
    aps = _per_class_ap(classes.ravel(), top_scores.ravel(), top_labels.ravel(), class_positives)
    return _mean_of_aps(aps, class_positives, filter_empty_classes)


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
