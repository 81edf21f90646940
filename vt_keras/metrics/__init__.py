"""vt_keras.metrics: YouTube-8M classification and segment metrics, text-video retrieval metrics."""
from vt_keras.metrics.retrieval import mean_rank
from vt_keras.metrics.retrieval import median_rank
from vt_keras.metrics.retrieval import ranks
from vt_keras.metrics.retrieval import recall_at_k
from vt_keras.metrics.retrieval import retrieval_metrics
from vt_keras.metrics.segments import segment_average_precision
from vt_keras.metrics.segments import segment_map
from vt_keras.metrics.yt8m import average_precision
from vt_keras.metrics.yt8m import gap
from vt_keras.metrics.yt8m import hit_at_one
from vt_keras.metrics.yt8m import mean_average_precision
from vt_keras.metrics.yt8m import perr
from vt_keras.metrics.yt8m_accumulator import YT8MMetrics
from vt_keras.metrics.yt8m_accumulator import format_table

__all__ = [
    "YT8MMetrics",
    "average_precision",
    "format_table",
    "gap",
    "hit_at_one",
    "mean_average_precision",
    "mean_rank",
    "median_rank",
    "perr",
    "ranks",
    "recall_at_k",
    "retrieval_metrics",
    "segment_average_precision",
    "segment_map",
]
