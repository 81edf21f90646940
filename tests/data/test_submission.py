"""Tests of the segment submission: streaming per-class top-K against a full sort, bounded memory, the CSV."""
import numpy as np
import pytest

from vt_keras.data.submission import SegmentTopK, read_segment_classes, read_submission, write_submission
from vt_keras.errors import ConfigError, DataError


def brute_force(ids, scores, classes, k):
    """Every score in memory, one stable sort per class: higher score first, then the earlier segment."""
    out = {}
    for j, c in enumerate(classes):
        order = sorted(range(len(ids)), key=lambda i: (-scores[i, j], i))[:k]
        out[c] = [(ids[i], float(scores[i, j])) for i in order]
    return out


@pytest.mark.parametrize("k, buffer_size, batch", [(7, 8, 5), (3, 1, 1), (50, 16, 13), (1, 4, 9)])
def test_streaming_top_k_equals_a_full_sort_with_ties(rng, k, buffer_size, batch):
    # Scores on a coarse grid: many ties, at the K-th place too.
    n, classes = 400, [0, 4, 9]
    scores = (rng.integers(0, 6, size=(n, len(classes))) / 5).astype(np.float32)
    ids = [f"v{i // 7}:{i % 7 * 5}" for i in range(n)]
    top = SegmentTopK(classes, k, buffer_size=buffer_size)
    held = 0
    for start in range(0, n, batch):
        top.add(ids[start:start + batch], scores[start:start + batch])
        held = max(held, top.held)
    # Bounded memory: never more than K kept plus one buffer (and one batch) pending, however many segments.
    assert held <= k + buffer_size + batch - 1 and n > 4 * (k + buffer_size + batch)
    assert top.num_ids <= len(classes) * k + buffer_size + batch
    assert top.ranked() == brute_force(ids, scores, classes, k)


def test_batching_does_not_change_the_result(rng):
    scores = rng.integers(0, 3, size=(60, 2)).astype(np.float32)
    ids = [f"x:{5 * i}" for i in range(60)]
    results = []
    for batch in (1, 7, 60):
        top = SegmentTopK([1, 2], 10, buffer_size=3)
        for start in range(0, 60, batch):
            top.add(ids[start:start + batch], scores[start:start + batch])
        results.append(top.ranked())
    assert results[0] == results[1] == results[2]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="top_segments: expected a positive integer, found 0"):
        SegmentTopK([1], 0)
    with pytest.raises(ConfigError, match="expected at least one class id"):
        SegmentTopK([], 5)
    with pytest.raises(DataError, match=r"scores: expected shape \[2, 1\], found \[2, 2\]"):
        SegmentTopK([1], 5).add(["a:0", "a:5"], np.zeros((2, 2)))


def test_submission_format_is_exact(tmp_path):
    path = tmp_path / "s.csv"
    write_submission(str(path), {17: [("b:5", 0.9), ("a:0", 0.3)], 3: ["a:10"], 8: []})
    assert path.read_text() == "Class,Segments\n3,a:10\n8,\n17,b:5 a:0\n"
    assert read_submission(str(path)) == {3: ["a:10"], 8: [], 17: ["b:5", "a:0"]}


@pytest.mark.parametrize("text, message", [
    ("", "line 1: expected the header 'Class,Segments', found 'an empty file'"),
    ("Id,Segs\n", "line 1: expected the header 'Class,Segments', found 'Id,Segs'"),
    ("Class,Segments\nx,a:0\n", "line 2: expected a non-negative class id, found 'x'"),
    ("Class,Segments\n3,a:0 b\n", "line 2: expected segment ids 'videoid:start', found 'b'"),
    ("Class,Segments\n3,a:0 a:x\n", "line 2: expected segment ids 'videoid:start', found 'a:x'"),
    ("Class,Segments\n3,a:0\n3,b:0\n", "line 3: class 3 is listed a second time"),
    ("Class,Segments\n3,a:0 b:5 a:0\n", "line 2: class 3 lists segment 'a:0' twice"),
    ("Class,Segments\n3,a:0,b:5\n", "line 2: expected 'class_id,segment ids separated by spaces', found 3 fields"),
])
def test_bad_submissions_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_submission(str(path))
    assert str(info.value) == f"submission '{path}', {message}"


def test_segment_classes_file(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("Index\n3\n17\n\n1\n")  # the starter code's segment_label_ids.csv has a header line
    assert read_segment_classes(str(path)) == [3, 17, 1]
    path.write_text("3\n17\n")
    assert read_segment_classes(str(path), num_classes=18) == [3, 17]
    for text, message in [("3\nx\n", "line 2: expected a class id, found 'x'"),
                          ("3\n3\n", "line 2: class 3 is listed twice"),
                          ("3\n20\n", "line 2: expected 0 <= class id < 18 (the export's classes), found 20"),
                          ("Class\n", "expected class ids, one per line, found none")]:
        path.write_text(text)
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_segment_classes(str(path), num_classes=18)
