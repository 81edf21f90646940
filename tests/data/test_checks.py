"""Tests of the deferred in-graph checks: `gate`, its order, its Python recheck, and the parser's small graph."""
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.data import yt8m
from vt_keras.data.checks import (assert_rows, data_counters, data_errors, gate, iterate, report_if,
                                  reset_data_counters)
from vt_keras.errors import DataError

SMALL = (("rgb", 6), ("audio", 2))
WHERE = tf.constant(["row 0", "row 1", "row 2"])


def _run(checks_fn, recheck=None):
    """Builds the checks in a tf.function (as a tf.data parser does) and runs the gate once."""
    @tf.function
    def run():
        return gate(checks_fn(), recheck)

    with data_errors():
        return int(run())


def _rows(*flags):
    return tf.constant(flags)


def test_gate_passes_when_every_check_holds():
    assert _run(lambda: [assert_rows(_rows(True, True, True), WHERE, lambda i: "never"),
                         report_if(tf.constant(False), "test_never", lambda: "never")]) == 0
    assert "test_never" not in data_counters()


def test_gate_raises_the_first_failing_check_in_order_naming_its_first_bad_row():
    def checks(first_ok):
        return lambda: [assert_rows(_rows(True, True, True), WHERE, lambda i: "holds"),
                        assert_rows(_rows(True, first_ok, False), WHERE, lambda i: "first check"),
                        assert_rows(_rows(False, True, True), WHERE, lambda i: "second check")]

    with pytest.raises(DataError, match=r"^row 2: first check$"):
        _run(checks(True))
    with pytest.raises(DataError, match=r"^row 1: first check$"):
        _run(checks(False))


def test_a_tolerated_problem_is_reported_and_does_not_fail():
    reset_data_counters()
    assert _run(lambda: [report_if(tf.constant(True), "test_tolerated", lambda: tf.constant("seen")),
                         assert_rows(_rows(True, True, True), WHERE, lambda i: "holds")]) == 0
    assert data_counters()["test_tolerated"] == 1


def test_with_a_recheck_the_message_is_built_on_demand_outside_the_pipeline():
    calls = []

    def recheck(values):  # what a parser's recheck does: the same checks, eagerly, messages in the graph
        calls.append(values.tolist())
        gate([assert_rows(tf.constant(values), WHERE, lambda i: "message from the recheck")])

    for flags in ((True, True, True), (True, False, True)):
        values = tf.constant(flags)
        dataset = tf.data.Dataset.from_tensors(values).map(
            lambda v: gate([assert_rows(v, WHERE, lambda i: "never built")], recheck=(recheck, [v])))
        if all(flags):
            assert [int(x) for x in iterate(dataset)] == [0]
        else:
            with pytest.raises(DataError, match=r"^row 1: message from the recheck$"):
                list(iterate(dataset))
    assert calls == [[True, False, True]]


def _frame(rng, video_id, labels=(1,)):
    return yt8m.make_frame_example(video_id, labels, {n: rng.uniform(-1, 1, (3, d)) for n, d in SMALL}
                                   ).SerializeToString()


def _failure_branch_nodes(count_problems):
    parse = tf.function(lambda s: yt8m.parse_frame_example(s, SMALL, max_frames=4, num_classes=5,
                                                           count_problems=count_problems, dtype="uint8"))
    graph = parse.get_concrete_function(tf.TensorSpec([None], tf.string)).graph.as_graph_def()
    return sum(len(f.node_def) for f in graph.library.function)


def test_the_frame_parser_builds_its_messages_outside_the_graph_with_the_same_text(rng):
    # tf.data pays for every node of a map function on each call, untaken branches included
    # (bench/input_pipeline.py), so the parser keeps its messages in a callback; an export keeps them
    # in the graph. The two build the same message.
    assert _failure_branch_nodes(count_problems=True) < 50 < 200 < _failure_branch_nodes(count_problems=False)
    records = tf.constant([_frame(rng, "good"), _frame(rng, "bad", labels=(2, 7))])
    messages = []
    for count_problems in (True, False):
        dataset = tf.data.Dataset.from_tensors(records).map(
            lambda s, c=count_problems: yt8m.parse_frame_example(s, SMALL, max_frames=4, num_classes=5,
                                                                  count_problems=c, dtype="uint8"))
        with pytest.raises(DataError) as error:
            list(yt8m.iterate(dataset))
        messages.append(str(error.value))
    assert messages[0] == messages[1] == ("record 'bad': label 7 out of range; expected 0 <= label < "
                                          "num_classes=5")


def test_multi_hot_labels_under_the_gate_match_a_numpy_reference(rng):
    label_sets = [(), (4,), (0, 3, 3), (1, 2, 0, 4)]
    parsed = yt8m.parse_frame_example(tf.constant([_frame(rng, f"v{i}", labels) for i, labels in
                                                   enumerate(label_sets)]), SMALL, max_frames=4, num_classes=5)
    expected = np.zeros((len(label_sets), 5), np.float32)
    for row, labels in enumerate(label_sets):
        expected[row, list(labels)] = 1.0
    np.testing.assert_array_equal(parsed["labels"].numpy(), expected)
