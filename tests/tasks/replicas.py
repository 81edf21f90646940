"""Shared checks of the task tests: the trainer's initial weights, and how far N replicas may end from one device."""
import contextlib

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def weights(model):
    return [np.array(w.numpy()) for w in model.weights]


@contextlib.contextmanager
def initial_weights(task_class):
    """Records the weights every run of `task_class` starts from, in a list (one entry per run).

    The loop calls `task.warm_start(model)` right after `build_model()`,
    before any step, so a test can compare a trained model with the same
    model before training rather than with another one built from other
    random numbers. The task keeps its registered name (a workdir stays
    usable by the binaries).
    """
    recorded = []
    own = task_class.__dict__.get("warm_start")
    original = task_class.warm_start

    def warm_start(self, model):
        original(self, model)
        recorded.append(weights(model))

    task_class.warm_start = warm_start
    try:
        yield recorded
    finally:
        if own is None:
            del task_class.warm_start
        else:
            task_class.warm_start = own


def assert_moved(initial, final, names):
    """Every weight tensor changed in training (a no-op trainer fails here)."""
    still = [n for n, a, b in zip(names, initial, final) if np.array_equal(a, b)]
    assert not still, f"training left these weights at their initial values: {still}"


def replica_atols(initial, final, global_batch):
    """Per weight tensor, the float32 rounding by which N replicas may end from one device (plain SGD).

    One device and N replicas compute the same per-example terms of every
    gradient element and only add them in another order (per replica, then
    across replicas). Reordering a float32 sum of n terms changes it by at
    most (n - 1)·ε·Σ|terms| (Higham, Accuracy and Stability of Numerical
    Algorithms, §4.2), and Σ|terms| ≤ n·max|term|. Taking each example's
    term of a tensor as at most that tensor's largest total update (terms
    cancel by less than the factor n this allows), the tensor differs by at
    most n²·ε·max|w_final - w_initial|: for n = 16, 3.1e-5 of its largest
    update (measured: below 1% of that bound). SGD without momentum applies
    the summed gradient unchanged; Adam would divide near-zero gradients by
    their own size and turn this rounding into full steps.

    Returns:
        One absolute tolerance per tensor of `initial`.
    """
    return [global_batch ** 2 * EPS32 * float(np.max(np.abs(b - a))) for a, b in zip(initial, final)]
