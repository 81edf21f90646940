"""The checks of one non-TensorFlow backend, shared by `test_jax.py` and `test_torch.py`.

This process runs TensorFlow (tests/conftest.py). For each backend a worker
process (`tests/backends/worker.py`) does the same work under
`KERAS_BACKEND=<backend>`; the tests here compare what it wrote with the
TensorFlow results and with float64 references computed here. A backend that
is not installed is skipped with the command that installs it.
"""
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.backends import cases
from tests.conftest import REPO_ROOT
from tests.losses.test_soft_dtw import _brute_force, _numpy_sdtw
from vt_keras.backend import value_and_grad

EPS32 = float(np.finfo(np.float32).eps)  # 1.2e-7; half of it is the unit roundoff
GAMMAS = (0.01, 0.1, 1.0)
SMALL_LENGTHS = (np.array([3, 4, 1, 4, 2]), np.array([4, 4, 3, 1, 3]))
MEDIUM_LENGTHS = (np.array([13, 4, 7]), np.array([9, 9, 2]))


def _worker(backend, *args, timeout=900):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    if backend == "jax":
        # Eager JAX compiles every operation it meets (about 700 small programs for the
        # layer checks); without XLA's expensive optimisations that takes a third less time.
        flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    done = subprocess.run([sys.executable, "-m", "tests.backends.worker", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"the {backend} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def _soft_dtw_inputs():
    rng = np.random.default_rng(3)
    return dict(small=rng.normal(size=(5, 4, 4)), small_rows=SMALL_LENGTHS[0], small_cols=SMALL_LENGTHS[1],
                small_weights=np.arange(1.0, 6.0), medium=rng.normal(size=(3, 13, 9)) - 0.5,
                medium_rows=MEDIUM_LENGTHS[0], medium_cols=MEDIUM_LENGTHS[1], medium_weights=np.arange(1.0, 4.0),
                gammas=np.array(GAMMAS))


class BackendChecks:
    """Subclassed once per backend with `BACKEND` set; one worker run serves every test."""

    BACKEND = None

    @pytest.fixture(scope="class")
    @classmethod
    def run(cls, tmp_path_factory):
        """Runs the worker once: `(json results, npz arrays, directory, TensorFlow model outputs)`."""
        if importlib.util.find_spec(cls.BACKEND) is None:
            pytest.skip(f"{cls.BACKEND} is not installed (pip install 'vt_keras[{cls.BACKEND}]')")
        directory = str(tmp_path_factory.mktemp(cls.BACKEND))
        np.savez(os.path.join(directory, "soft_dtw_inputs.npz"), **_soft_dtw_inputs())
        keras.utils.set_random_seed(5)
        model = cases.build_classifier()
        model.save(os.path.join(directory, "tensorflow.keras"))
        tensorflow_outputs = np.asarray(model(cases.model_inputs()))
        _worker(cls.BACKEND, "run", directory)
        with open(os.path.join(directory, f"{cls.BACKEND}.json")) as f:
            results = json.load(f)
        print(f"{cls.BACKEND} worker:", {k: v for k, v in results.items() if k.startswith("seconds/")})
        arrays = dict(np.load(os.path.join(directory, f"{cls.BACKEND}.npz")))
        return results, arrays, directory, tensorflow_outputs

    def test_imports_and_runs_without_tensorflow(self, run):
        # The worker made TensorFlow unimportable before importing Keras, then ran every check.
        assert run[0]["backend"] == self.BACKEND
        assert run[0]["tensorflow_modules"] == []

    def test_worker_finished(self, run):
        errors = {k: v for k, v in run[0].items() if k.startswith("error/")}
        assert not errors, "\n".join(errors.values())

    @pytest.mark.parametrize("name", [c[0] for c in cases.layer_cases()])
    def test_run_layer_test(self, run, name):
        assert run[0].get(f"layer/{name}") == "ok", run[0].get(f"layer/{name}", "not run")

    @pytest.mark.parametrize("name", sorted(cases.loss_cases()))
    def test_loss_value_and_gradient_match_tensorflow(self, run, name):
        fn, args = cases.loss_cases()[name]
        value, grads = value_and_grad(fn, args)
        # Both backends run the same float32 graph in different operation orders. A
        # reduction of at most K = 64 terms rounds each result by at most K·ε relative,
        # through at most 4 chained reductions: 4·64·ε ≈ 3e-5 of the largest magnitude.
        # Some losses amplify their inputs' rounding: soft-min weights exp(−Δr/γ) by 1/γ
        # (γ = 0.1: soft-DTW, VT-TWINS, whose τ = 0.5 adds 1/τ), CrossCLR's anchor
        # weights softmax((c/Σc)/κ) by 1/κ = 1/0.0035 ≈ 290. Length normalisation divides
        # VT-TWINS' scores by n + m >= 2 before τ: no more amplification than without it.
        amplification = {"soft_dtw": 10, "soft_dtw_divergence": 2, "vt_twins": 20, "vt_twins_length_normalized": 20,
                         "crossclr_paper": 290,
                         "crossclr_released_code": 290, "crossclr_queue": 290}.get(name, 1)
        rtol = 4 * 64 * EPS32 * amplification
        arrays = run[1]
        for what, got, want in [("value", arrays[f"loss/{name}/value"], value)] + [
                (f"gradient {i}", arrays[f"loss/{name}/grad{i}"], g) for i, g in enumerate(grads)]:
            want = np.asarray(keras.ops.convert_to_numpy(want), np.float64)
            scale = max(float(np.max(np.abs(want))), 1e-30)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale,
                                       err_msg=f"{self.BACKEND} {name} {what}")

    def test_soft_dtw_matches_float64_references(self, run):
        inputs, arrays = _soft_dtw_inputs(), run[1]
        dtypes = sorted({key.split("/")[1] for key in arrays if key.startswith("soft_dtw/")})
        assert "float32" in dtypes and (self.BACKEND != "torch" or "float64" in dtypes)
        for dtype in dtypes:
            for gamma in GAMMAS:
                for band in (None, 1):
                    # Brute force over every path of the small pairs (band included).
                    tag = f"soft_dtw/{dtype}/small/{gamma}/{band}"
                    self._compare(arrays, tag, inputs, "small", dtype, gamma,
                                  lambda c: _brute_force(c, gamma, band))
                # The textbook float64 recursion on the medium pairs (no band).
                tag = f"soft_dtw/{dtype}/medium/{gamma}/None"
                self._compare(arrays, tag, inputs, "medium", dtype, gamma, lambda c: _numpy_sdtw(c, gamma))
            alignment = arrays[f"soft_dtw_alignment/{dtype}"]
            assert np.allclose(alignment[:, 0, 0], 1, atol=1e-6) and np.allclose(alignment[:, -1, -1], 1, atol=1e-6)

    @staticmethod
    def _compare(arrays, tag, inputs, key, dtype, gamma, reference):
        rows, cols, weights = inputs[f"{key}_rows"], inputs[f"{key}_cols"], inputs[f"{key}_weights"]
        values, grads = arrays[f"{tag}/values"], arrays[f"{tag}/grad"]
        for b, (n, m) in enumerate(zip(rows, cols)):
            value, grad = reference(inputs[key][b, :n, :m])
            assert np.isinf(value) == np.isinf(values[b]), (tag, b)
            if np.isinf(value):
                assert np.all(grads[b] == 0), (tag, b)
                continue
            if dtype == "float64":
                # The tolerances of the float64 kernel tests (tests/losses/test_soft_dtw.py):
                # the textbook backward itself loses ~1e-12 at γ = 0.01.
                np.testing.assert_allclose(values[b], value, rtol=1e-12, atol=1e-12, err_msg=f"{tag} {b}")
                np.testing.assert_allclose(grads[b, :n, :m], weights[b] * grad, atol=1e-9, err_msg=f"{tag} {b}")
            else:
                # The float32 contract of tests/losses/test_soft_dtw.py's float32 test.
                np.testing.assert_allclose(values[b], value, rtol=1e-5, atol=1e-5, err_msg=f"{tag} {b}")
                np.testing.assert_allclose(grads[b, :n, :m], weights[b] * grad, atol=1e-4 * weights[b],
                                           err_msg=f"{tag} {b}")
            assert np.all(grads[b, n:] == 0) and np.all(grads[b, :, m:] == 0), (tag, b)

    def test_keras_file_moves_from_tensorflow(self, run):
        # The same weights and graph; the reductions (T = 4 frames, widths ≤ 18) round by
        # at most 18·ε relative per layer, through 5 layers: 5·18·ε ≈ 1e-5 of outputs ≤ 1.
        np.testing.assert_allclose(run[1]["model/from_tensorflow"], run[3], rtol=1e-5, atol=1e-5)

    def test_keras_file_moves_to_tensorflow(self, run):
        loaded = keras.saving.load_model(os.path.join(run[2], f"{self.BACKEND}.keras"))
        outputs = np.asarray(loaded(cases.model_inputs()))
        # As above, in the other direction.
        np.testing.assert_allclose(outputs, run[1]["model/own"], rtol=1e-5, atol=1e-5)
