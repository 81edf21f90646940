"""Tests of the retrieval metrics against a brute-force rank computation."""
import tracemalloc

import numpy as np
import pytest

from vt_keras.errors import ConfigError, DataError
from vt_keras.metrics.retrieval import (
    mean_rank,
    median_rank,
    ranks,
    recall_at_k,
    retrieval_metrics,
)


def bf_ranks(similarity):
    """Rank of the diagonal with every tie counted against it, by sorting in Python."""
    out = []
    for i, row in enumerate(similarity):
        # Sort with the true candidate placed after all candidates of equal score.
        order = sorted(range(len(row)), key=lambda j: (-row[j], j == i))
        out.append(order.index(i) + 1)
    return np.array(out)


def test_ranks_on_a_worked_matrix():
    s = np.array([
        [0.9, 0.1, 0.3],   # best: rank 1
        [0.8, 0.3, 0.3],   # 0.8 above, 0.3 tied: pessimistic rank 3
        [0.2, 0.2, 0.2],   # all tied: rank 3
    ])
    assert ranks(s).tolist() == [1, 3, 3]
    assert recall_at_k(s, 1) == pytest.approx(1 / 3)
    assert recall_at_k(s, 3) == 1.0
    assert median_rank(s) == 3.0
    assert mean_rank(s) == pytest.approx(7 / 3)


def test_ranks_against_brute_force_with_ties(rng):
    s = rng.integers(0, 4, size=(20, 25)).astype(float)  # many ties
    np.testing.assert_array_equal(ranks(s), bf_ranks(s))
    for k in (1, 5, 10):
        assert recall_at_k(s, k) == pytest.approx(np.mean(bf_ranks(s) <= k))


def test_collapsed_embeddings_get_the_worst_rank():
    e = np.ones((6, 3))
    m = retrieval_metrics(e, e)
    assert m["t2v/R@1"] == 0.0 and m["t2v/MedR"] == 6.0 and m["v2t/MnR"] == 6.0


def test_retrieval_metrics_match_the_full_matrix_for_any_block_size(rng):
    # Small integer embeddings: exact dot products, with ties.
    t = rng.integers(-2, 3, size=(37, 4)).astype(np.float64)
    v = rng.integers(-2, 3, size=(37, 4)).astype(np.float64)
    full_t2v, full_v2t = t @ v.T, v @ t.T
    want = {}
    for prefix, sim in (("t2v", full_t2v), ("v2t", full_v2t)):
        r = bf_ranks(sim)
        want.update({f"{prefix}/R@{k}": 100.0 * np.mean(r <= k) for k in (1, 5, 10)})
        want[f"{prefix}/MedR"], want[f"{prefix}/MnR"] = np.median(r), np.mean(r)
    for block in (1, 5, 36, 37, 1024):
        got = retrieval_metrics(t, v, block_size=block)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key]), (block, key)
    assert retrieval_metrics(t, v)["t2v/R@5"] == pytest.approx(100 * recall_at_k(full_t2v, 5))


def test_memory_stays_within_one_block(rng):
    n, block = 4000, 256
    t = rng.normal(size=(n, 8)).astype(np.float32)
    v = (t + rng.normal(size=t.shape)).astype(np.float32)
    tracemalloc.start()
    try:
        m = retrieval_metrics(t, v, block_size=block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0 < m["t2v/R@1"] < m["t2v/R@5"] < m["t2v/R@10"] < 100
    full_matrix = n * n * 4
    # A block of similarities plus its boolean comparison, with room to spare,
    # but far below one n x n matrix.
    assert peak < 4 * block * n * 4 < full_matrix / 3


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="num_queries <= num_candidates"):
        ranks(np.zeros((3, 2)))
    with pytest.raises(DataError, match="finite"):
        ranks(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match="k must be"):
        recall_at_k(np.eye(2), 0)
    with pytest.raises(DataError, match="same shape"):
        retrieval_metrics(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="block_size"):
        retrieval_metrics(np.eye(2), np.eye(2), block_size=0)
