"""Per-top-level-category metrics against a brute-force re-derivation of their definition."""
import numpy as np
import pytest

from vt_keras.errors import ConfigError, DataError
from vt_keras.metrics.categories import CategoryMetrics, category_classes, format_category_table

# A taxonomy of 11 classes: roots 0 ("Food") and 1 ("Games/Toys", a "/" in its name) and 2 ("Art"),
# with children and grandchildren in no particular id order.
PARENTS = [None, None, None, 0, 1, 3, 3, 2, 1, 4, 8]
NAMES = ["Food", "Games/Toys", "Art", "Recipe", "VideoGame", "Dessert", "Bread", "Painting", "Board", "Action",
         "Chess"]
EXPECTED = {"Food": [0, 3, 5, 6], "Games-Toys": [1, 4, 8, 9, 10], "Art": [2, 7]}


def test_category_classes_follow_the_parent_links():
    got = category_classes(PARENTS, NAMES)
    assert list(got) == list(EXPECTED)
    for name, ids in EXPECTED.items():
        np.testing.assert_array_equal(got[name], ids)
    twice = category_classes([None, None, 0], ["Music", "Music", "Rock"])
    assert {k: v.tolist() for k, v in twice.items()} == {"Music#0": [0, 2], "Music#1": [1]}
    with pytest.raises(ConfigError, match="3 parents but 2 names"):
        category_classes([None, 0, 0], ["a", "b"])


def brute_force(scores, labels, classes, top_k, predicted_top):
    """The module docstring's definition, written out with Python loops and sorted lists."""
    n, c = scores.shape
    kept = []
    for i in range(n):
        kth = sorted(scores[i], reverse=True)[min(predicted_top, c) - 1]
        if any(scores[i, j] >= kth for j in classes) or any(labels[i, j] for j in classes):
            kept.append(i)
    if not kept:
        return None
    s, y = scores[np.ix_(kept, classes)], labels[np.ix_(kept, classes)]
    hits, perrs, pooled = [], [], []
    per_class = {j: [] for j in range(len(classes))}
    for i in range(len(kept)):
        order = sorted(range(len(classes)), key=lambda j: -s[i, j])
        hits.append(float(y[i, order[0]]))
        k_i = int(y[i].sum())
        perrs.append(sum(y[i, j] for j in order[:k_i] if s[i, j] > 0) / k_i if k_i else 0.0)
        for j in order[:top_k]:
            pooled.append((s[i, j], y[i, j]))
            per_class[j].append((s[i, j], y[i, j]))

    def ap(pairs, positives):
        if positives == 0:
            return 0.0
        pairs = sorted(pairs, key=lambda p: -p[0])
        total, found = 0.0, 0
        for rank, (_, label) in enumerate(pairs, 1):
            if label:
                found += 1
                total += found / rank
        return total / positives

    aps = [ap(per_class[j], y[:, j].sum()) for j in range(len(classes)) if y[:, j].sum() > 0]
    return {"hit_at_one": np.mean(hits), "perr": np.mean(perrs), "gap": ap(pooled, y.sum()),
            "map": np.mean(aps) if aps else 0.0, "num_videos": len(kept)}


@pytest.mark.parametrize("top_k,predicted_top", [(1, 1), (3, 1), (20, 1), (3, 2), (20, 20)])
def test_category_metrics_match_brute_force_over_batches(rng, top_k, predicted_top):
    n = 40
    scores = rng.random((n, len(NAMES)))
    # Labels along the hierarchy (a leaf with its ancestors), one or two paths per video, some videos none.
    labels = np.zeros((n, len(NAMES)), np.int64)
    for i in range(n):
        for leaf in rng.choice([5, 6, 7, 9, 10, 2], size=int(rng.integers(0, 3)), replace=False):
            node = int(leaf)
            while node is not None:
                labels[i, node] = 1
                node = PARENTS[node]
    categories = category_classes(PARENTS, NAMES)
    metrics = CategoryMetrics(len(NAMES), categories, top_k=top_k, predicted_top=predicted_top)
    for start in range(0, n, 7):  # uneven batches
        metrics.update(scores[start:start + 7], labels[start:start + 7])
    result = metrics.result()
    for name, classes in EXPECTED.items():
        expected = brute_force(scores, labels, classes, top_k, predicted_top)
        assert result[f"category_{name}/num_videos"] == expected["num_videos"]
        for key in ("hit_at_one", "perr", "gap", "map"):
            assert result[f"category_{name}/{key}"] == pytest.approx(expected[key], abs=1e-12), (name, key)
            assert result[f"category_{name}/{key}_error"] == pytest.approx(100 - 100 * expected[key], abs=1e-9)
    # A category counts for the videos it labels and those it is predicted for: all of them when every class is
    # among the predictions, fewer with the top class alone.
    labelled = [(labels[:, ids] != 0).any(axis=1).sum() for ids in EXPECTED.values()]
    counts = [result[f"category_{name}/num_videos"] for name in EXPECTED]
    if predicted_top >= len(NAMES):
        assert counts == [n] * 3
    if predicted_top == 1:
        assert all(lab <= count < n for lab, count in zip(labelled, counts)), (labelled, counts)


def test_a_category_no_video_counts_for_is_nan_with_zero_videos():
    metrics = CategoryMetrics(4, {"a": [0, 1], "b": [2, 3]})
    metrics.update(np.array([[0.9, 0.1, 0.2, 0.3]]), np.array([[1, 0, 0, 0]]))
    result = metrics.result()
    assert result["category_a/gap"] == 1.0 and result["category_a/num_videos"] == 1
    assert np.isnan(result["category_b/gap"]) and result["category_b/num_videos"] == 0
    table = format_category_table(result).splitlines()
    assert table[0].split() == ["category", "videos", "|", "GAP", "err", "MAP", "err", "PERR", "err", "Hit@1", "err"]
    assert table[2].split() == ["a", "1", "|", "0.00", "0.00", "0.00", "0.00"]
    assert table[3].split() == ["b", "0", "|", "-", "-", "-", "-"]
    assert format_category_table({"gap": 0.5}) == ""


def test_bad_shapes_and_class_ids_are_one_line():
    with pytest.raises(ConfigError, match=r"category 'a' must list class ids in \[0, 4\); found \[3, 4\]"):
        CategoryMetrics(4, {"a": [3, 4]})
    metrics = CategoryMetrics(4, {"a": [0]})
    with pytest.raises(DataError, match=r"expected predictions and labels of shape \[batch, 4\]; found \(2, 5\)"):
        metrics.update(np.zeros((2, 5)), np.zeros((2, 5)))
