"""YouTube-8M metrics per top-level category (Goyal et al., Tables 5 and 9).

The paper reports GAP error "for various top-level categories" to show
which categories gain most from cross-modal learning, and defines its
per-level results as: "evaluate on ground truth and predictions only for
labels at that level; examples for which there is neither prediction nor
ground truth for a level are discarded". Table 5 gives no definition of
its own; this module applies the same protocol to a category instead of a
level. For the top-level category `c`:

- its classes `S_c` are `c` and every class below it in the taxonomy;
- a video counts for `c` when one of its ground-truth labels is in `S_c`
  or when the model predicts `c`: its highest-scoring class over all
  classes is in `S_c` (`predicted_top`, 1 by default; ties at that score
  count as predicted);
- on those videos, Hit@1, PERR, GAP and MAP are computed exactly as
  overall (`vt_keras.metrics.yt8m`), with the scores and labels of the
  classes `S_c` only: GAP pools each video's top `top_k` (20) of `S_c`, and
  the denominator is the count of its labels in `S_c`.

A video that counts only through a prediction has no label in `S_c`: it
adds false positives to GAP and MAP and scores 0 in Hit@1 and PERR, as in
the per-level results. Why the top class and not the top 20 that the
per-level results read as "prediction": every video has labels at every
level, but only in its own categories, and on the default data 20 of 88
classes reach into almost every category, so the top-20 reading keeps
~85% of all videos for each category and its Hit@1 and PERR mostly count
the videos of other categories.
"""
import numpy as np

from vt_keras.errors import ConfigError, DataError
from vt_keras.metrics.yt8m_accumulator import YT8MMetrics

PREFIX = "category_"
_METRICS = ("hit_at_one", "perr", "gap", "map")


def category_classes(parents, names):
    """The classes of each top-level category, from a taxonomy's parent links.

    Args:
        parents: `[C]` the parent id of each class, None (or a negative
            number) for a top-level class.
        names: `[C]` class names; a category is named after its top-level
            class ("/" becomes "-", since "/" separates a scope from a
            metric in result keys; a name used twice gets its id appended).

    Returns:
        dict `{category name: sorted int array of its class ids}` (the
        top-level class and all its descendants), in the order of the
        top-level class ids.

    Example:
        >>> category_classes([None, None, 0, 1, 2], ["Food", "Games", "Recipe", "VideoGame", "Dessert"])
        {'Food': array([0, 2, 4]), 'Games': array([1, 3])}
    """
    parents = [None if p is None or p < 0 else int(p) for p in parents]
    if len(names) != len(parents):
        raise ConfigError(f"category_classes: {len(parents)} parents but {len(names)} names; expected one each")
    root = list(range(len(parents)))
    for c in range(len(parents)):
        seen = 0
        while parents[root[c]] is not None:
            root[c] = parents[root[c]]
            seen += 1
            if seen > len(parents):
                raise DataError(f"category_classes: class {c} has a cycle among its ancestors")
    tops = [c for c in range(len(parents)) if parents[c] is None]
    labels = [str(names[c]).replace("/", "-") for c in tops]
    out = {}
    for c, label in zip(tops, labels):
        key = label if labels.count(label) == 1 else f"{label}#{c}"
        out[key] = np.array([k for k in range(len(parents)) if root[k] == c], np.int64)
    return out


class CategoryMetrics:
    """Accumulates Hit@1, PERR, GAP and MAP per top-level category over batches.

    The definition is in the module docstring. Memory is O(videos · top_k)
    per category (only each kept video's top k of the category's classes is
    kept, by `YT8MMetrics`).

    Args:
        num_classes: C, the number of columns of the scores.
        categories: dict `{name: class ids}`, e.g. from `category_classes`.
        top_k: predictions per video kept for GAP and MAP (Kaggle: 20).
        predicted_top: a video counts for a category it is not labelled
            with when one of its `predicted_top` highest-scoring classes
            (ties included) is in the category.
        filter_empty_classes: MAP convention, see
            `vt_keras.metrics.yt8m.mean_average_precision`.

    Call: `update(predictions, labels)` with `[batch, C]` scores and 0/1
    labels; `result()` -> for each category `name`, the keys
    `category_<name>/{hit_at_one,perr,gap,map}`, their error rates
    `..._error` (100 - 100 · metric) and `category_<name>/num_videos`
    (NaN metrics and 0 videos for a category no video counts for).

    Example:
        >>> m = CategoryMetrics(5, {"Food": [0, 2, 4], "Games": [1, 3]})
        >>> m.update(np.random.rand(8, 5), np.eye(5)[np.arange(8) % 5])
        >>> m.result()["category_Food/gap_error"]  # doctest: +SKIP
    """

    def __init__(self, num_classes, categories, top_k=20, predicted_top=1, filter_empty_classes=True):
        self.num_classes = int(num_classes)
        self.top_k, self.predicted_top = int(top_k), int(predicted_top)
        if self.top_k < 1 or self.predicted_top < 1:
            raise ConfigError(f"top_k and predicted_top must be positive integers; found {top_k!r} and "
                              f"{predicted_top!r}")
        self.categories = {}
        for name, ids in categories.items():
            ids = np.unique(np.asarray(list(ids), np.int64))
            if ids.size == 0 or ids.min() < 0 or ids.max() >= self.num_classes:
                raise ConfigError(f"category {name!r} must list class ids in [0, {self.num_classes}); "
                                  f"found {ids.tolist()[:10]}")
            self.categories[str(name)] = ids
        self.filter_empty_classes = filter_empty_classes
        self.reset()

    def reset(self):
        """Forgets every batch seen so far."""
        self._streams = {name: YT8MMetrics(ids.size, top_k=self.top_k, filter_empty_classes=self.filter_empty_classes)
                         for name, ids in self.categories.items()}
        self._counts = dict.fromkeys(self.categories, 0)

    def update(self, predictions, labels):
        """Adds a batch of `[batch, C]` scores and 0/1 labels."""
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        if predictions.ndim != 2 or predictions.shape[1] != self.num_classes or labels.shape != predictions.shape:
            raise DataError(f"CategoryMetrics.update: expected predictions and labels of shape [batch, "
                            f"{self.num_classes}]; found {predictions.shape} and {labels.shape}")
        if predictions.shape[0] == 0:
            return
        k = min(self.predicted_top, self.num_classes)
        kth = np.partition(predictions, self.num_classes - k, axis=1)[:, self.num_classes - k]
        for name, ids in self.categories.items():
            keep = (predictions[:, ids] >= kth[:, None]).any(axis=1) | (labels[:, ids] != 0).any(axis=1)
            if keep.any():
                rows = np.flatnonzero(keep)
                self._streams[name].update(predictions[np.ix_(rows, ids)], labels[np.ix_(rows, ids)])
                self._counts[name] += rows.size

    def result(self):
        """The metrics so far as a flat dict of floats (see the class docstring)."""
        out = {}
        for name, stream in self._streams.items():
            prefix = f"{PREFIX}{name}/"
            values = stream.result() if self._counts[name] else {}
            for metric in _METRICS:
                value = float(values.get(metric, np.nan))
                out[prefix + metric] = value
                out[prefix + metric + "_error"] = 100.0 - 100.0 * value
            out[prefix + "num_videos"] = int(self._counts[name])
        return out


def category_names(results):
    """The category names in a results dict, in their order of appearance."""
    names = []
    for key in results:
        if key.startswith(PREFIX) and "/" in key:
            name = key[len(PREFIX):key.rindex("/")]
            if name not in names:
                names.append(name)
    return names


def format_category_table(results):
    """Renders the `category_*` keys of a results dict as a text table of error rates (%), or "" if none.

    One row per top-level category: the videos that count for it, then the
    GAP, MAP, PERR and Hit@1 error rates (100 - metric%), the paper's
    Table 5 transposed.

    Example:
        >>> print(format_category_table(CategoryMetrics(...).result()))  # doctest: +SKIP
    """
    names = category_names(results)
    if not names:
        return ""
    columns = (("GAP err", "gap_error"), ("MAP err", "map_error"), ("PERR err", "perr_error"),
               ("Hit@1 err", "hit_at_one_error"))
    width = max(10, max(len(n) for n in names) + 2)
    header = f"{'category':<{width}}{'videos':>8} |" + "".join(f"{title:>11}" for title, _ in columns)
    lines = [header, "-" * len(header)]
    for name in names:
        prefix = f"{PREFIX}{name}/"
        row = f"{name:<{width}}{int(results.get(prefix + 'num_videos', 0)):>8} |"
        for _, key in columns:
            value = results.get(prefix + key, np.nan)
            row += f"{'-':>11}" if value is None or np.isnan(value) else f"{value:11.2f}"
        lines.append(row)
    return "\n".join(lines)
