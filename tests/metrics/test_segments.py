"""Tests of the segment challenge's MAP@K against a brute-force re-derivation and a hand-computed example."""
import numpy as np
import pytest

from vt_keras.data.submission import SegmentTopK
from vt_keras.errors import ConfigError
from vt_keras.metrics.segments import segment_average_precision, segment_map


def bf_map(submission, ratings, top_n):
    """The definition, literally: for each class, keep the rated segments of its first top_n; at every
    positive among them, the precision so far; sum / positives of the class; mean over classes with positives."""
    aps = []
    for c, ranked in submission.items():
        rated = ratings.get(c, {})
        positives = [s for s, y in rated.items() if y == 1.0]
        if not positives:
            continue
        kept = [s for s in ranked[:top_n] if s in rated]
        precisions = [sum(rated[t] == 1.0 for t in kept[:j + 1]) / (j + 1) for j, s in enumerate(kept)
                      if rated[s] == 1.0]
        aps.append(sum(precisions) / len(positives))
    return sum(aps) / len(aps) if aps else 0.0, len(aps)


def test_hand_computed_example():
    # Class 3 ranks a:0 (+), x:5 (unrated, removed), b:0 (-), c:0 (+); d:0 (+) is never found.
    # Kept list + - +: precisions at the positives 1/1 and 2/3; 3 positives: (1 + 2/3) / 3 = 5/9.
    # Class 8 ranks e:0 (+) first of its 2 positives: 1/2. Class 9 has no positive rating: left out.
    submission = {3: ["a:0", "x:5", "b:0", "c:0"], 8: ["e:0", "e:5"], 9: ["a:0"]}
    ratings = {3: {"a:0": 1.0, "b:0": 0.0, "c:0": 1.0, "d:0": 1.0}, 8: {"e:0": 1.0, "f:0": 1.0}, 9: {"a:0": 0.0}}
    result = segment_map(submission, ratings)
    assert result["ap"] == {3: pytest.approx(5 / 9), 8: pytest.approx(0.5), 9: None}
    assert result["map"] == pytest.approx((5 / 9 + 0.5) / 2)
    assert result["num_classes"] == 2 and result["classes_without_positives"] == 1
    assert (result["submitted"], result["rated"], result["found"], result["positives"]) == (7, 5, 3, 5)
    # top_n = 2 cuts c:0 away: (1/1) / 3.
    assert segment_map(submission, ratings, top_n=2)["ap"][3] == pytest.approx(1 / 3)


def test_no_positive_anywhere_is_zero_over_zero_classes():
    result = segment_map({1: ["a:0"]}, {1: {"a:0": 0.0}})
    assert result["map"] == 0.0 and result["num_classes"] == 0 and result["classes_without_positives"] == 1
    assert segment_map({1: ["a:0"]}, {})["classes_without_positives"] == 1
    assert segment_average_precision(["a:0"], {"a:0": 0.0}) is None


@pytest.mark.parametrize("seed", range(6))
def test_random_submissions_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    segments = [f"v{v}:{5 * s}" for v in range(12) for s in range(4)]
    classes = list(range(6))
    ratings = {}
    for c in classes[:-1]:  # the last class has no rating at all
        rated = rng.choice(len(segments), int(rng.integers(0, 15)), replace=False)
        ratings[c] = {segments[i]: float(rng.random() < 0.4) for i in rated}
    # Scores with ties, streamed through the submission's top-K: the ranking the writer produces.
    scores = rng.integers(0, 4, size=(len(segments), len(classes))).astype(np.float32)
    k = int(rng.integers(5, 40))
    top = SegmentTopK(classes, k, buffer_size=7)
    for start in range(0, len(segments), 9):
        top.add(segments[start:start + 9], scores[start:start + 9])
    submission = {c: [s for s, _ in pairs] for c, pairs in top.ranked().items()}
    for top_n in (1, 3, k, 1000):
        expected, count = bf_map(submission, ratings, top_n)
        result = segment_map(submission, ratings, top_n)
        assert result["map"] == pytest.approx(expected, abs=1e-12) and result["num_classes"] == count
        # Unrated segments in the lists change nothing: insert some anywhere.
        noisy = {c: [s for pair in zip(ranked, [f"u{c}:{i}" for i in range(len(ranked))]) for s in pair]
                 for c, ranked in submission.items()}
        assert segment_map(noisy, ratings, 2 * top_n)["map"] == pytest.approx(expected, abs=1e-12)


def test_bad_top_n():
    with pytest.raises(ConfigError, match="top_n must be a positive integer; found 0"):
        segment_map({}, {}, top_n=0)
