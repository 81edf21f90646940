"""YouTube-8M metrics (numpy): Hit@1, PERR, GAP and MAP of one set of predictions.

`YT8MMetrics` (`metrics/yt8m_accumulator.py`) accumulates the same numbers
over batches, overall and per taxonomy level.

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
