"""MAP@K of the 2019 YouTube-8M segment challenge, as its evaluation computed it.

For each class of the submission: its ranked list of segments is cut at
`top_n`; segments that were not rated for that class are removed (their
truth is unknown); the average precision is taken over what is left,

    AP_c = (1 / P_c) · Σ_j y_j · precision@j,

with y_j = 1 for a positively rated segment (score > 0.5; the data holds
1.0 and 0.0) and P_c the number of positively rated segments of class c in
the data, found or not. MAP@K is the mean of AP_c over the submission's
classes.

A class of the submission without any positive rating has no AP (0/0; the
challenge's script fails on it). Here it is left out of the mean and
counted in `classes_without_positives`; if no class has a positive rating,
the MAP is 0.0 over 0 classes.
"""
import numpy as np

from vt_keras.errors import ConfigError

__all__ = ["segment_average_precision", "segment_map"]


def _check_top_n(top_n):
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ConfigError(f"top_n must be a positive integer; found {top_n!r}.")
    return int(top_n)


def segment_average_precision(ranked, rated, num_positives=None, top_n=100000):
    """AP of one class's ranked segments against that class's ratings.

    Args:
        ranked: segment ids of the class, best first.
        rated: `{segment_id: score}`, the class's ratings.
        num_positives: positively rated segments of the class (default: counted in `rated`).
        top_n: the list is cut here before the unrated segments are removed.

    Returns:
        The AP, or None when the class has no positive rating.

    Example:
        >>> segment_average_precision(["a:0", "x:5", "b:0", "c:0"], {"a:0": 1.0, "b:0": 0.0, "c:0": 1.0, "d:0": 1.0})
        0.5555555555555555
    """
    top_n = _check_top_n(top_n)
    if num_positives is None:
        num_positives = sum(1 for score in rated.values() if score > 0.5)
    if num_positives == 0:
        return None
    hits, rank, total = 0, 0, 0.0
    for segment in ranked[:top_n]:
        score = rated.get(segment)
        if score is None:
            continue  # not rated for this class: its truth is unknown
        rank += 1
        if score > 0.5:
            hits += 1
            total += hits / rank
    return total / num_positives


def segment_map(submission, ratings, top_n=100000):
    """MAP@K of a segment submission (see the module docstring).

    Args:
        submission: `{class_id: [segment_id, ...]}`, each list best first
            (e.g. from `vt_keras.data.submission.read_submission`).
        ratings: `{class_id: {segment_id: score}}` (e.g. from
            `vt_keras.data.segments.read_segment_ratings`).
        top_n: K, the length each class's list is cut to.

    Returns:
        `{"map": float, "num_classes": classes averaged, "classes_without_positives": int,
        "ap": {class_id: AP or None}, "submitted": segments after the cut, "rated": of them rated for
        their class, "found": of them positive, "positives": positive ratings of the averaged classes}`.

    Example:
        >>> segment_map({3: ["a:0", "b:5"]}, {3: {"a:0": 1.0, "b:5": 0.0, "c:0": 1.0}})["map"]
        0.5
    """
    top_n = _check_top_n(top_n)
    aps, submitted, rated_count, found, positives = {}, 0, 0, 0, 0
    for c, ranked in submission.items():
        rated = ratings.get(int(c), {})
        cut = list(ranked[:top_n])
        num_positives = sum(1 for score in rated.values() if score > 0.5)
        aps[int(c)] = segment_average_precision(cut, rated, num_positives, top_n)
        submitted += len(cut)
        scores = [rated[s] for s in cut if s in rated]
        rated_count += len(scores)
        found += sum(1 for score in scores if score > 0.5)
        positives += num_positives
    scored = [ap for ap in aps.values() if ap is not None]
    return {"map": float(np.mean(scored)) if scored else 0.0, "num_classes": len(scored),
            "classes_without_positives": len(aps) - len(scored), "ap": aps, "submitted": submitted,
            "rated": rated_count, "found": found, "positives": positives}
