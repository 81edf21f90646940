"""Tests of the YouTube-8M metrics against worked values and a brute-force re-derivation."""
import itertools

import numpy as np
import pytest

from vt_keras.errors import ConfigError, DataError
from vt_keras.metrics.yt8m import (
    average_precision,
    gap,
    hit_at_one,
    mean_average_precision,
    perr,
)
from vt_keras.metrics.yt8m_accumulator import YT8MMetrics, format_table

# The worked example; the hand computation of every value is in test_worked_example.
P = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1], [0.6, 0.4, 0.3, 0.95]])
Y = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [0, 1, 0, 0]])


# --- brute force: plain Python loops over sorted lists, the documented tie rule ---

def bf_order(scores, labels):
    """Indices best first: descending score, negatives before positives, lower index."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], bool(labels[j]), j))


def bf_ap(pairs, num_positives):
    if num_positives == 0:
        return 0.0
    pairs = sorted(pairs, key=lambda p: (-p[0], bool(p[1])))
    total, hits = 0.0, 0
    for rank, (_, y) in enumerate(pairs, start=1):
        if y:
            hits += 1
            total += hits / rank
    return total / num_positives


def bf_metrics(p, y, k, filter_empty=True, rated=None):
    """The metrics by their definitions; `rated`: 0/1 label weights (only entries of weight 1 exist)."""
    n, c = p.shape
    rated = np.ones((n, c), bool) if rated is None else np.asarray(rated, bool)
    y = np.asarray(y, bool) & rated
    hit, prec, pooled, per_class = [], [], [], [[] for _ in range(c)]
    for i in range(n):
        order = [j for j in bf_order(p[i], y[i]) if rated[i][j]]
        if not order:
            continue  # a video without any weighted class is left out
        hit.append(float(y[i][order[0]]))
        num = int(y[i].sum())
        prec.append(sum(1 for j in order[:num] if y[i][j] and p[i][j] > 0) / num if num else 0.0)
        for j in order[:k]:
            pooled.append((p[i][j], y[i][j]))
            per_class[j].append((p[i][j], y[i][j]))
    totals = y.sum(axis=0)
    aps = [bf_ap(per_class[j], totals[j]) for j in range(c)]
    if filter_empty:
        kept = [a for a, t in zip(aps, totals) if t > 0]
        m = sum(kept) / len(kept) if kept else 0.0
    else:
        m = sum(aps) / c
    return {"hit_at_one": np.mean(hit), "perr": np.mean(prec),
            "gap": bf_ap(pooled, int(y.sum())), "map": m, "num_videos": len(hit)}


def random_case(rng, n, c, levels=8, density=0.15):
    """Scores on a coarse grid (many ties) and sparse labels, some rows empty."""
    p = rng.integers(0, levels, size=(n, c)) / levels
    y = (rng.random((n, c)) < density).astype(np.int64)
    y[rng.random(n) < 0.2] = 0
    return p, y


# --- worked values ---

def test_worked_example():
    """By hand, for P and Y above (4 positives in all):

    Hit@1: the top classes are 0 (.9, positive), 1 (.8, negative), 3 (.95, negative): 1/3.
    PERR: video 0 has 2 positives and its top 2 (classes 0, 2) are both positive: 1; videos 1 and 2 have
        one positive each and their top class is negative: 0, 0. Mean 1/3.
    GAP, k = 20 (every pair): the 12 pairs by score are .95-, .9+, .8-, .7+, .6-, .5+, .4+, .3-, .3-, .2-,
        .1-, .1-; precisions at the positives 1/2, 2/4, 3/6, 4/7; (3/2 + 4/7) / 4 = 29/56.
    GAP, k = 1: the pairs .95-, .9+, .8-; precision 1/2 at the only positive; (1/2) / 4 = 0.125.
    GAP, k = 2: .95-, .9+, .8-, .7+, .6-, .5+; precisions 1/2, 2/4, 3/6; (3/2) / 4 = 0.375.
    MAP, k = 2: the top-2 lists are {0+, 2+}, {1-, 2+}, {3-, 0-}. Class 0: .9+, .6-: AP 1/1 over its 1
        positive = 1. Class 1: .8- only, 1 positive in Y: 0. Class 2: .7+, .5+: (1 + 1) / 2 = 1. Class 3:
        no positive. Starter code (classes with positives): (1 + 0 + 1) / 3 = 2/3; TF2 port (all 4
        classes): 2/4 = 0.5.
    """
    assert hit_at_one(P, Y) == pytest.approx(1 / 3)
    assert perr(P, Y) == pytest.approx(1 / 3)
    assert gap(P, Y, top_k=20) == pytest.approx(29 / 56)
    assert gap(P, Y, top_k=1) == pytest.approx(0.125)
    assert gap(P, Y, top_k=2) == pytest.approx(0.375)
    assert mean_average_precision(P, Y, top_k=2) == pytest.approx(2 / 3)
    assert mean_average_precision(P, Y, top_k=2, filter_empty_classes=False) == pytest.approx(0.5)


def test_average_precision_worked_value():
    # Already in descending order; the positives are at ranks 1, 2, 6, 7 and 10, so the precisions there
    # are 1/1, 2/2, 3/6, 4/7, 5/10 and AP = (1 + 1 + 0.5 + 0.5714286 + 0.5) / 5 = 0.7142857.
    scores = [0.98, 0.88, 0.77, 0.65, 0.64, 0.59, 0.45, 0.43, 0.20, 0.05]
    labels = [1, 1, 0, 0, 0, 1, 1, 0, 0, 1]
    assert average_precision(scores, labels) == pytest.approx(0.7142857, abs=1e-7)
    # A larger denominator (positives cut off the list) scales the AP down.
    assert average_precision(scores, labels, num_positives=10) == pytest.approx(0.7142857 / 2, abs=1e-7)
    assert average_precision(scores, np.zeros(10)) == 0.0


def test_k_larger_than_classes_uses_all_classes():
    assert gap(P, Y, top_k=1000) == gap(P, Y, top_k=4)
    assert mean_average_precision(P, Y, top_k=1000) == mean_average_precision(P, Y, top_k=4)


# --- ties ---

def test_ties_are_pessimistic_and_equal_the_worst_shuffle():
    scores = np.array([0.7, 0.5, 0.5, 0.5, 0.2, 0.2])
    labels = np.array([0, 1, 0, 1, 1, 0])
    # The starter code sorts a shuffled list stably by score; enumerate all
    # shuffles: ours must equal the smallest AP any of them can give.
    worst = min(
        _stable_sorted_ap(scores[list(perm)], labels[list(perm)])
        for perm in itertools.permutations(range(6))
    )
    assert average_precision(scores, labels) == pytest.approx(worst)
    assert average_precision([0.5] * 4, [1, 0, 1, 0]) == pytest.approx((1 / 3 + 2 / 4) / 2)


def _stable_sorted_ap(scores, labels):
    order = sorted(range(len(scores)), key=lambda j: -scores[j])
    hits, total = 0, 0.0
    for rank, j in enumerate(order, start=1):
        if labels[j]:
            hits += 1
            total += hits / rank
    return total / labels.sum()


def test_ties_at_top_and_at_the_top_k_boundary():
    p = np.array([[0.5, 0.5, 0.5, 0.1], [0.9, 0.9, 0.2, 0.2]])
    y = np.array([[1, 0, 0, 1], [1, 0, 0, 0]])
    # Row 0: a negative ties the positive at the top; row 1 likewise.
    assert hit_at_one(p, y) == 0.0
    # k = 2 keeps the two tied negatives of row 0, so no positive of row 0 is pooled.
    assert gap(p, y, top_k=2) == pytest.approx(bf_metrics(p, y, 2)["gap"])
    assert gap(p, y, top_k=2) == pytest.approx((1 / 2) / 3)


def test_order_of_videos_and_classes_does_not_matter_with_ties(rng):
    p, y = random_case(rng, 30, 7, levels=3)
    rows, cols = rng.permutation(30), rng.permutation(7)
    shuffled_p, shuffled_y = p[rows][:, cols], y[rows][:, cols]
    assert hit_at_one(p, y) == pytest.approx(hit_at_one(p[rows], y[rows]))
    assert perr(p, y) == pytest.approx(perr(p[rows], y[rows]))
    assert gap(p, y, top_k=7) == pytest.approx(gap(shuffled_p, shuffled_y, top_k=7))
    assert mean_average_precision(p, y, 7) == pytest.approx(mean_average_precision(shuffled_p, shuffled_y, 7))


# --- edge cases and brute force ---

def test_empty_label_rows():
    p = np.array([[0.9, 0.1], [0.3, 0.6]])
    y = np.array([[1, 0], [0, 0]])
    assert perr(p, y) == 0.5  # the empty row scores 0 and still counts
    assert gap(p, np.zeros_like(y)) == 0.0
    assert mean_average_precision(p, np.zeros_like(y)) == 0.0
    assert perr(p, np.zeros_like(y)) == 0.0


def test_perr_ignores_non_positive_scores():
    assert perr([[-0.1, -0.5, -0.9]], [[1, 0, 0]]) == 0.0


@pytest.mark.parametrize("k", [1, 3, 20])
def test_against_brute_force(rng, k):
    for _ in range(3):
        p, y = random_case(rng, 25, 9)
        want = bf_metrics(p, y, k)
        assert hit_at_one(p, y) == pytest.approx(want["hit_at_one"], abs=1e-12)
        assert perr(p, y) == pytest.approx(want["perr"], abs=1e-12)
        assert gap(p, y, top_k=k) == pytest.approx(want["gap"], abs=1e-12)
        assert mean_average_precision(p, y, top_k=k) == pytest.approx(want["map"], abs=1e-12)
        tf2 = bf_metrics(p, y, k, filter_empty=False)["map"]
        assert mean_average_precision(p, y, k, filter_empty_classes=False) == pytest.approx(tf2, abs=1e-12)


def test_continuous_scores_against_brute_force(rng):
    p, y = rng.random((40, 12)).astype(np.float32), (rng.random((40, 12)) < 0.2).astype(int)
    want = bf_metrics(p, y, 5)
    assert gap(p, y, top_k=5) == pytest.approx(want["gap"], abs=1e-12)
    assert mean_average_precision(p, y, top_k=5) == pytest.approx(want["map"], abs=1e-12)


# --- the accumulator ---

def test_accumulator_equals_functions_on_concatenated_batches(rng):
    metrics = YT8MMetrics(num_classes=11, top_k=4)
    batches = [random_case(rng, n, 11) for n in (1, 7, 16, 3, 30)]
    for p, y in batches:
        metrics.update(p, y)
    p = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    got = metrics.result()
    assert got["hit_at_one"] == hit_at_one(p, y)
    assert got["perr"] == perr(p, y)
    assert got["gap"] == gap(p, y, top_k=4)
    assert got["map"] == mean_average_precision(p, y, top_k=4)
    assert got["num_videos"] == 57
    for name in ("hit_at_one", "perr", "gap", "map"):
        assert got[name + "_error"] == pytest.approx(100 - 100 * got[name])
    # Memory: only top-k triples per video are kept.
    assert sum(a.size for a in metrics._overall.scores) == 57 * 4
    metrics.reset()
    with pytest.raises(DataError, match="at least one video"):
        metrics.result()


def bf_level(p, y, classes, k, rated=None):
    """Brute-force per-level metrics: slice classes, drop videos with nothing at the level."""
    rated = np.ones(p.shape, bool) if rated is None else np.asarray(rated, bool)
    keep = []
    for i in range(p.shape[0]):
        top = [j for j in bf_order(p[i], y[i]) if rated[i][j]][:k]
        if any(j in classes for j in top) or any(y[i][j] and rated[i][j] for j in classes):
            keep.append(i)
    sub_p, sub_y, sub_rated = p[keep][:, classes], y[keep][:, classes], rated[keep][:, classes]
    return bf_metrics(sub_p, sub_y, k, rated=sub_rated), len(keep)


def test_per_level_against_brute_force(rng):
    levels = np.array([0, 0, 1, 1, 1, 2, 3, 3, -1, 2])
    metrics = YT8MMetrics(num_classes=10, top_k=3, taxonomy=levels)
    batches = [random_case(rng, n, 10, density=0.1) for n in (9, 14, 5)]
    for p, y in batches:
        metrics.update(p, y)
    p = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    got = metrics.result()
    for lvl in range(4):
        want, count = bf_level(p, y, list(np.flatnonzero(levels == lvl)), 3)
        assert got[f"level_{lvl}/num_videos"] == count
        for name, value in want.items():
            assert got[f"level_{lvl}/{name}"] == pytest.approx(value, abs=1e-12), (lvl, name)
    assert 0 < got["level_3/num_videos"] < p.shape[0]  # the filter did leave videos out
    # The mapping form of the same taxonomy gives the same numbers.
    mapped = YT8MMetrics(10, top_k=3, taxonomy={l: np.flatnonzero(levels == l) for l in range(4)})
    for b in batches:
        mapped.update(*b)
    assert mapped.result() == got


# --- label weights ---

def weighted_case(rng, n, c, density=0.3):
    """A random case with 0/1 label weights; some rows have no weighted class, some positives weight 0."""
    p, y = random_case(rng, n, c, density=0.3)
    rated = (rng.random((n, c)) < density).astype(np.float32)
    rated[rng.random(n) < 0.15] = 0
    return p, y, rated


@pytest.mark.parametrize("k", [1, 3, 20])
def test_label_weights_against_brute_force(rng, k):
    levels = np.array([0, 0, 1, 1, 1, 2, 3, 3, -1, 2])
    metrics = YT8MMetrics(num_classes=10, top_k=k, taxonomy=levels)
    batches = [weighted_case(rng, n, 10) for n in (9, 1, 14, 5)]
    for p, y, rated in batches:
        metrics.update(p, y, rated)
    p, y, rated = (np.concatenate([b[i] for b in batches]) for i in range(3))
    got = metrics.result()
    want = bf_metrics(p, y, k, rated=rated)
    assert 0 < want["num_videos"] < p.shape[0]  # rows without a weighted class were left out
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    for lvl in range(4):
        want, count = bf_level(p, y, list(np.flatnonzero(levels == lvl)), k, rated)
        assert got[f"level_{lvl}/num_videos"] == count == want["num_videos"]
        for name, value in want.items():
            assert got[f"level_{lvl}/{name}"] == pytest.approx(value, abs=1e-12), (lvl, name)


def test_weights_of_one_everywhere_change_nothing(rng):
    """The weighted path (a sparse list of entries) and the dense one are separate code: they must agree."""
    levels = np.array([0, 0, 1, 1, 2, 2, -1])
    plain, weighted = YT8MMetrics(7, top_k=3, taxonomy=levels), YT8MMetrics(7, top_k=3, taxonomy=levels)
    for n in (6, 11, 1):
        p, y = random_case(rng, n, 7)
        plain.update(p, y)
        weighted.update(p, y, np.ones_like(p))
    assert weighted.result() == plain.result()


def test_rated_pairs_map_is_the_segment_challenge_map(rng):
    """One weighted class per row (a rated (segment, class) pair): MAP = segment_map of the full ranking."""
    from vt_keras.metrics.segments import segment_map

    num_classes, pairs = 6, 80
    segments = [f"v{i // 3}:{5 * (i % 3)}" for i in range(40)]
    chosen = rng.choice(len(segments) * num_classes, pairs, replace=False)
    seg, cls = chosen // num_classes, chosen % num_classes
    rating = (rng.random(pairs) < 0.4).astype(np.float64)
    scores = rng.random((pairs, num_classes))  # continuous: no ties
    weights = np.eye(num_classes)[cls]
    metrics = YT8MMetrics(num_classes, top_k=20)
    metrics.update(scores, weights * rating[:, None], weights)
    ratings, ranked = {}, {}
    for i in range(pairs):
        ratings.setdefault(int(cls[i]), {})[segments[seg[i]]] = rating[i]
    for c in range(num_classes):
        rows = np.flatnonzero(cls == c)
        ranked[c] = [segments[seg[i]] for i in rows[np.argsort(-scores[rows, c])]]
    want = segment_map(ranked, ratings)
    got = metrics.result()
    assert 0 < want["num_classes"] and got["num_videos"] == pairs
    assert got["map"] == pytest.approx(want["map"], abs=1e-12)


def test_format_table_lists_metrics_and_error_rates():
    metrics = YT8MMetrics(num_classes=4, top_k=20, taxonomy=[0, 0, 1, 1])
    metrics.update(P, Y)
    table = format_table(metrics.result())
    lines = table.splitlines()
    assert "Hit@1" in lines[0] and "GAP err" in lines[0]
    overall = next(line for line in lines if line.startswith("overall"))
    assert "33.33" in overall and "51.79" in overall and "66.67" in overall and "48.21" in overall
    assert any(line.startswith("level 0") for line in lines)
    assert any(line.startswith("level 1") for line in lines)


# --- user errors ---

def test_errors_name_the_problem():
    with pytest.raises(DataError, match="shape of predictions"):
        gap(P, Y[:, :3])
    with pytest.raises(DataError, match="0/1"):
        perr(P, Y * 2)
    with pytest.raises(DataError, match="finite"):
        hit_at_one(np.full((1, 2), np.nan), [[1, 0]])
    with pytest.raises(ConfigError, match="top_k"):
        gap(P, Y, top_k=0)
    with pytest.raises(ConfigError, match="taxonomy"):
        YT8MMetrics(4, taxonomy=[0, 1])
    with pytest.raises(ConfigError, match="outside"):
        YT8MMetrics(4, taxonomy={0: [1, 7]})
    with pytest.raises(DataError, match="num_classes=5"):
        YT8MMetrics(5).update(P, Y)
    with pytest.raises(DataError, match="num_positives"):
        average_precision([0.1, 0.2], [1, 1], num_positives=1)
    with pytest.raises(DataError, match=r"label_weights must have the shape of predictions \(3, 4\); found \(3, 3\)"):
        YT8MMetrics(4).update(P, Y, np.ones((3, 3)))
    with pytest.raises(DataError, match=r"label_weights must be 0/1 .*found values such as \[0.5, 0.5, 0.5\]"):
        YT8MMetrics(4).update(P, Y, np.full((3, 4), 0.5))
