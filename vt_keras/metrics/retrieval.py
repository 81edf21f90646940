"""Text-video retrieval metrics (numpy): R@K, median and mean rank.

The protocol of the video-text retrieval papers (CrossCLR, Zolfaghari et al.
2021; VT-TWINS, Ko et al. 2022): text `i` and video `i` form the only true
pair, each query ranks every candidate by similarity, and the rank of the
true candidate gives R@K (percentage of queries ranked within K), MedR and
MnR.

Ties are broken *pessimistically*: the rank of the true candidate is the
number of candidates scoring at least as high as it, itself included. Equal
scores thus never help, and a collapsed model (all embeddings equal) gets
rank N instead of a perfect R@1.
"""
import numpy as np

from vt_keras.errors import ConfigError, DataError


def _check_similarity(similarity):
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.shape[0] > similarity.shape[1]:
        raise DataError(
            "similarity must be a 2-D [num_queries, num_candidates] array with "
            f"num_queries <= num_candidates (true pairs on the diagonal); found {similarity.shape}."
        )
    if not np.all(np.isfinite(similarity)):
        raise DataError("similarity must be finite; found NaN or Inf.")
    return similarity


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; found {value!r}.")
    return int(value)


def _block_ranks(block, first_row):
    """Ranks of rows `first_row...` of a similarity matrix, given as `block`."""
    rows = np.arange(block.shape[0])
    truth = block[rows, first_row + rows]
    return np.count_nonzero(block >= truth[:, None], axis=1)


def ranks(similarity):
    """1-based rank of the diagonal entry of each row (pessimistic ties).

    `rank_i = #{j : similarity[i, j] >= similarity[i, i]}`, i.e. one plus the
    number of strictly better candidates plus the number of other candidates
    tied with the true one.

    Args:
        similarity: `[num_queries, num_candidates]`, the true candidate of
            query `i` in column `i`.

    Returns:
        int array `[num_queries]`.

    Example:
        >>> ranks([[0.9, 0.1], [0.8, 0.3]]).tolist()
        [1, 2]
    """
    return _block_ranks(_check_similarity(similarity), 0)


def recall_at_k(similarity, k):
    """Fraction of queries whose true candidate ranks within the top `k`.

    Args:
        similarity: `[num_queries, num_candidates]`, true pairs on the diagonal.
        k: a positive integer.

    Returns:
        A float in [0, 1].

    Example:
        >>> recall_at_k([[0.9, 0.1], [0.8, 0.3]], 1)
        0.5
    """
    return float(np.mean(ranks(similarity) <= _positive_int(k, "k")))


def median_rank(similarity):
    """Median over queries of the true candidate's rank (MedR; lower is better).

    Args:
        similarity: `[num_queries, num_candidates]`, true pairs on the diagonal.

    Example:
        >>> median_rank([[0.9, 0.1], [0.8, 0.3]])
        1.5
    """
    return float(np.median(ranks(similarity)))


def mean_rank(similarity):
    """Mean over queries of the true candidate's rank (MnR; lower is better).

    Args:
        similarity: `[num_queries, num_candidates]`, true pairs on the diagonal.

    Example:
        >>> mean_rank([[0.9, 0.1], [0.8, 0.3]])
        1.5
    """
    return float(np.mean(ranks(similarity)))


def _blocked_ranks(queries, candidates, block_size):
    out = np.empty(queries.shape[0], np.int64)
    for start in range(0, queries.shape[0], block_size):
        block = queries[start:start + block_size] @ candidates.T
        out[start:start + block_size] = _block_ranks(block, start)
    return out


def _summary(r, prefix):
    out = {f"{prefix}/R@{k}": 100.0 * float(np.mean(r <= k)) for k in (1, 5, 10)}
    out[f"{prefix}/MedR"] = float(np.median(r))
    out[f"{prefix}/MnR"] = float(np.mean(r))
    return out


def retrieval_metrics(text_emb, video_emb, block_size=1024):
    """Text-to-video and video-to-text R@1/5/10, MedR and MnR of paired embeddings.

    Similarity is the dot product (L2-normalise the embeddings first for
    cosine). It is computed `block_size` queries at a time, so at most a
    `[block_size, N]` block exists at once: 10,000 pairs need no 10k x 10k
    matrix. Ranks are those of `ranks` (pessimistic ties).

    Args:
        text_emb: `[N, d]` text embeddings; row `i` describes video `i`.
        video_emb: `[N, d]` video embeddings.
        block_size: queries per block.

    Returns:
        A dict with `t2v/R@1`, `t2v/R@5`, `t2v/R@10` (percent, as the papers
        report them), `t2v/MedR`, `t2v/MnR` (ranks, 1 is best) and the same
        keys under `v2t/`.

    Example:
        >>> t, v = np.eye(3), np.eye(3)
        >>> retrieval_metrics(t, v)["t2v/R@1"]
        100.0
    """
    text_emb, video_emb = np.asarray(text_emb), np.asarray(video_emb)
    if text_emb.ndim != 2 or text_emb.shape != video_emb.shape or text_emb.shape[0] == 0:
        raise DataError(
            "text_emb and video_emb must both be non-empty [N, d] arrays of the same "
            f"shape; found {text_emb.shape} and {video_emb.shape}."
        )
    if not (np.all(np.isfinite(text_emb)) and np.all(np.isfinite(video_emb))):
        raise DataError("text_emb and video_emb must be finite; found NaN or Inf.")
    block_size = _positive_int(block_size, "block_size")
    out = _summary(_blocked_ranks(text_emb, video_emb, block_size), "t2v")
    out.update(_summary(_blocked_ranks(video_emb, text_emb, block_size), "v2t"))
    return out
