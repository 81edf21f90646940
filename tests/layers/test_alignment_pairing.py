"""Which rows `CKAAlignment(num_samples=N)` pairs, against a float64 numpy re-derivation, on every backend.

Feature 0 of every frame holds its flat position (`b·T + t`), so each drawn
row says where it came from. The checks re-derive in numpy what the draw
must be: which positions may be drawn (padding never), that row i of both
sides comes from the same frame of the same video (`pairing="position"`) or
from the same video (`"example"`), that the draw is uniform, and the CKA of
the drawn rows in float64.

Run as a module (`python -m tests.layers.test_alignment_pairing <backend>
<out.npz>`) it is the worker that makes the same draws under another Keras
backend; the TensorFlow process checks them with the same functions.
"""
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from vt_keras.errors import ConfigError, ShapeError
from vt_keras.layers.alignment import CKAAlignment

B, D1, D2 = 6, 4, 3
DRAWS = 150  # calls of the uniformity checks
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tagged_batch(t1, t2, seed=0):
    """`x [B, t1, D1]`, `y [B, t2, D2]` with feature 0 = flat position, and masks with gaps.

    Example 1 has no valid frame of y (never drawn by either pairing);
    padding holds NaN and huge values, which must never reach a drawn row.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, t1, D1))
    y = rng.normal(size=(B, t2, D2))
    y[..., 1:] += x[:, :1, 1:D2]  # shared structure, so CKA is not tiny
    x[..., 0] = np.arange(B * t1).reshape(B, t1)
    y[..., 0] = np.arange(B * t2).reshape(B, t2)
    x_mask = rng.random((B, t1)) > 0.35
    y_mask = rng.random((B, t2)) > 0.35
    x_mask[:, 0] = y_mask[:, 0] = True
    y_mask[1] = False
    x = np.where(x_mask[..., None], x, 1e30).astype("float32")
    y = np.where(y_mask[..., None], y, np.nan).astype("float32")
    return x, y, x_mask, y_mask


class Recorder:
    """A `gather` that keeps what it was given: the rows CKA compares and their validity."""

    def __init__(self):
        self.seen = []

    def __call__(self, v, axis=0):
        self.seen.append(keras.ops.convert_to_numpy(v))
        return v


def draw(layer, x, y, x_mask, y_mask):
    """One call: `(x_rows, y_rows, valid, loss)` as numpy."""
    recorder = Recorder()
    layer.gather = recorder
    _, _, loss = layer((x, y), mask=(x_mask, y_mask), return_loss=True)
    return (*recorder.seen[-3:], float(keras.ops.convert_to_numpy(loss)))


# --- the draws, made by whichever backend runs this module

CASES = {
    # name: (t1, t2, constructor arguments)
    "position_some": (5, 5, dict(num_samples=7, pairing="position", weight=1.0, seed=1)),
    "position_all": (5, 5, dict(num_samples=40, pairing="position", weight=1.0, seed=2)),
    "example_some": (5, 3, dict(num_samples=7, pairing="example", weight=1.0, seed=3)),
    "example_all": (5, 3, dict(num_samples=40, pairing="example", weight=1.0, seed=4)),
}
UNIFORM = {"position_uniform": (5, 5, dict(num_samples=4, pairing="position", seed=5)),
           "example_uniform": (5, 3, dict(num_samples=4, pairing="example", seed=6))}


def make_draws():
    """Every case's rows, on the running backend: `{f"{case}/{part}": array}`."""
    out = {}
    for name, (t1, t2, init) in CASES.items():
        rows = draw(CKAAlignment(**init), *tagged_batch(t1, t2))
        for part, value in zip(("x", "y", "valid", "loss"), rows):
            out[f"{name}/{part}"] = np.asarray(value)
    for name, (t1, t2, init) in UNIFORM.items():
        layer, batch = CKAAlignment(**init), tagged_batch(t1, t2)
        rows = [draw(layer, *batch) for _ in range(DRAWS)]
        out[f"{name}/x"] = np.stack([r[0] for r in rows])
        out[f"{name}/y"] = np.stack([r[1] for r in rows])
        out[f"{name}/valid"] = np.stack([r[2] for r in rows])
    return out


# --- the float64 re-derivation


def np_linear_cka(x, y):
    """Biased linear CKA, gram form `tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))`, float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    h = np.eye(len(x)) - 1.0 / len(x)
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def eligible_positions(pairing, x_mask, y_mask):
    """Flat positions of x a draw may take: valid in both (position), or valid with a valid y frame (example)."""
    if pairing == "position":
        return np.flatnonzero(x_mask & y_mask)
    return np.flatnonzero(x_mask & y_mask.any(axis=1, keepdims=True))


def check_rows(name, draws, t1, t2, init):
    """The invariants of one draw, re-derived from the masks; returns the drawn x positions."""
    x, y, x_mask, y_mask = tagged_batch(t1, t2)
    x_rows, y_rows, valid = (draws[f"{name}/{part}"] for part in ("x", "y", "valid"))
    eligible = eligible_positions(init["pairing"], x_mask, y_mask)
    count = min(init["num_samples"], len(eligible))
    np.testing.assert_array_equal(valid, np.arange(init["num_samples"]) < count)
    np.testing.assert_array_equal(x_rows[count:], 0.0)
    np.testing.assert_array_equal(y_rows[count:], 0.0)
    x_pos, y_pos = x_rows[:count, 0].astype(int), y_rows[:count, 0].astype(int)
    assert np.all(np.diff(x_pos) > 0), "distinct positions, in batch order"
    assert np.isin(x_pos, eligible).all(), "only eligible positions: padding is never drawn"
    if count == len(eligible):
        np.testing.assert_array_equal(x_pos, eligible)  # too few to choose: every one of them
    if init["pairing"] == "position":
        np.testing.assert_array_equal(y_pos, x_pos)  # the same frame of the same video
    else:
        np.testing.assert_array_equal(y_pos // t2, x_pos // t1)  # the same video
        assert y_mask.reshape(-1)[y_pos].all(), "a valid frame of that video"
    np.testing.assert_array_equal(x_rows[:count], x.reshape(-1, D1)[x_pos])
    np.testing.assert_array_equal(y_rows[:count], y.reshape(-1, D2)[y_pos])
    return x_pos, y_pos


def check_value(name, draws, t1, t2, init):
    x, y, _, _ = tagged_batch(t1, t2)
    x_pos, y_pos = check_rows(name, draws, t1, t2, init)
    expected = -init["weight"] * np_linear_cka(x.reshape(-1, D1)[x_pos], y.reshape(-1, D2)[y_pos])
    # float32 CKA of a few rows of O(10) values: a few ulps of the O(1) result.
    assert float(draws[f"{name}/loss"]) == pytest.approx(expected, abs=1e-5)


def check_uniform(name, draws, t1, t2, init):
    """Each eligible x position, and each valid y frame given its video, drawn as often as a uniform draw."""
    x_mask, y_mask = tagged_batch(t1, t2)[2:]
    eligible = eligible_positions(init["pairing"], x_mask, y_mask)
    n = init["num_samples"]
    x_pos = draws[f"{name}/x"][..., 0].astype(int)
    assert draws[f"{name}/valid"].all()
    counts = np.bincount(x_pos.reshape(-1), minlength=B * t1)[eligible]
    # Without replacement, each eligible position is in a draw with p = n / E:
    # counts are Binomial(DRAWS, p); 5 sigma misses a fair draw with
    # probability below 1e-5 over all positions.
    p = n / len(eligible)
    assert np.all(np.abs(counts - DRAWS * p) <= 5 * np.sqrt(DRAWS * p * (1 - p))), counts
    if init["pairing"] == "example":
        y_pos = draws[f"{name}/y"][..., 0].astype(int)
        for video in np.unique(x_pos // t1):
            chosen = y_pos[x_pos // t1 == video] - video * t2
            frames = np.flatnonzero(y_mask[video])
            assert np.isin(chosen, frames).all()
            q = 1.0 / len(frames)
            got = np.bincount(chosen, minlength=t2)[frames]
            assert np.all(np.abs(got - len(chosen) * q) <= 5 * np.sqrt(len(chosen) * q * (1 - q))), (video, got)


def check_all(draws):
    for name, (t1, t2, init) in CASES.items():
        check_value(name, draws, t1, t2, init)
    for name, (t1, t2, init) in UNIFORM.items():
        check_uniform(name, draws, t1, t2, init)


# --- tests


@pytest.fixture(scope="module")
def tensorflow_draws():
    return make_draws()


def test_draws_on_tensorflow_match_the_numpy_rederivation(tensorflow_draws):
    check_all(tensorflow_draws)


@pytest.mark.parametrize("case", ["position_some", "example_some"])
def test_rederivation_catches_a_wrong_pairing(tensorflow_draws, case):
    # The checks themselves: rows of y from other places must fail them.
    draws = {k: v.copy() for k, v in tensorflow_draws.items()}
    t1, t2, init = CASES[case]
    valid = int(draws[f"{case}/valid"].sum())
    draws[f"{case}/y"][:valid] = np.roll(draws[f"{case}/y"][:valid], 1, axis=0)
    with pytest.raises(AssertionError):
        check_rows(case, draws, t1, t2, init)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_draws_on_other_backends_match_the_numpy_rederivation(tmp_path, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install 'vt_keras[{backend}]')")
    path = os.path.join(tmp_path, f"{backend}.npz")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    # TensorFlow made unimportable: the layer must not need it.
    code = ("import sys, runpy; sys.modules['tensorflow'] = None; "
            "runpy.run_module('tests.layers.test_alignment_pairing', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, backend, path], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    check_all(dict(np.load(path)))


def test_pooled_side_is_its_vector_at_every_frame():
    x, y, x_mask, y_mask = tagged_batch(4, 4)
    pooled = x[:, 0]  # valid for every example
    layer = CKAAlignment(num_samples=50, seed=0)
    x_rows, y_rows, valid, _ = draw(layer, pooled, y, None, y_mask)
    count = int(y_mask.sum())
    np.testing.assert_array_equal(valid, np.arange(50) < count)
    y_pos = y_rows[:count, 0].astype(int)
    np.testing.assert_array_equal(y_pos, np.flatnonzero(y_mask))
    np.testing.assert_array_equal(x_rows[:count], pooled[y_pos // 4])


def test_position_pairing_needs_one_time_axis():
    x, y, x_mask, y_mask = tagged_batch(5, 3)
    layer = CKAAlignment(num_samples=4, name="align")
    with pytest.raises(ShapeError, match=r"align \(CKAAlignment\): \(x_seq, y_seq\) must be two sequences of one "
                                         r"length for pairing='position'.*pairing='example'.*found lengths 5 and 3"):
        layer((x, y), mask=(x_mask, y_mask))
    # Without sampling, or pairing by example, different lengths are fine.
    CKAAlignment()((x, y), mask=(x_mask, y_mask))
    CKAAlignment(num_samples=4, pairing="example")((x, y), mask=(x_mask, y_mask))


def test_bad_pairing_is_a_config_error():
    with pytest.raises(ConfigError, match=r"pairing must be one of \('position', 'example'\); got 'batch'"):
        CKAAlignment(num_samples=4, pairing="batch")


@pytest.mark.parametrize("pairing", ["position", "example"])
def test_keras_file_keeps_pairing_and_seed(tmp_path, pairing):
    t1, t2 = (5, 5) if pairing == "position" else (5, 3)
    x, y, x_mask, y_mask = tagged_batch(t1, t2)
    init = dict(weight=0.5, num_samples=6, pairing=pairing, seed=7)
    inputs = [keras.Input((t1, D1)), keras.Input((t2, D2)),
              keras.Input((t1,), dtype="bool"), keras.Input((t2,), dtype="bool")]
    outputs = CKAAlignment(**init, name="align")((inputs[0], inputs[1]), mask=(inputs[2], inputs[3]))
    path = os.path.join(tmp_path, "m.keras")
    keras.Model(inputs, list(outputs)).save(path)
    layer = keras.saving.load_model(path).get_layer("align")
    assert layer.get_config()["pairing"] == pairing and layer.get_config()["seed"] == 7
    # A loaded layer draws what a fresh one with the same seed draws.
    loaded, fresh = draw(layer, x, y, x_mask, y_mask), draw(CKAAlignment(**init), x, y, x_mask, y_mask)
    for a, b in zip(loaded, fresh):
        np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
    backend, out_path = sys.argv[1:3]
    assert keras.backend.backend() == backend, keras.backend.backend()
    np.savez(out_path, **make_draws())
