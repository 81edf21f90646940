"""The CKA synthetic experiment: data, losses against float64 numpy, warm-up, replicas, the sweep."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, mirrored_strategy
from tests.overrides import set_keys
from tests.tasks.replicas import EPS32, assert_moved, initial_weights, replica_atols
from vt_keras.cli.common import load_config_file
from vt_keras.data import cka_synthetic as data
from vt_keras.distributed import identity_gather
from vt_keras.errors import ConfigError
from vt_keras.tasks import cka_synthetic as task_lib
from vt_keras import tasks
from vt_keras.train.task import TASKS, StepContext

METHODS = task_lib.METHODS


def quiet(*args):
    del args


def tiny_config(method="cos_cka", **overrides):
    config = load_config_file(f"configs/cka_synthetic.py:{method}")
    config.data.num_train, config.data.num_heldout, config.data.dim = 256, 64, 8
    config.train.batch_size, config.train.num_steps, config.train.eval_every = 32, 2, 0
    config.train.checkpoint_every, config.train.cka_warmup_steps = 0, 0
    config.model.hidden_units = (8, 8, 8)
    set_keys(config, overrides)
    return config


def weights(model):
    return [np.asarray(v.numpy()) for v in model.weights]


def trainable(model, values):
    """The entries of `values` (one per weight) that belong to trainable weights."""
    keep = {id(v) for v in model.trainable_weights}
    return [x for v, x in zip(model.weights, values) if id(v) in keep]


# ---- numpy references ------------------------------------------------------

def np_cosine(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def np_linear_cka(x, y):
    """Gram form `tr(HKH HLH) / (‖HKH‖ ‖HLH‖)`, independent of the library's feature form."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / (np.linalg.norm(k) * np.linalg.norm(l))


# ---- data ------------------------------------------------------------------

def test_pairs_shapes_dtypes_and_determinism():
    p = data.make_pairs(num_train=300, num_heldout=50, dim=6, num_components=3, seed=7)
    assert p["train"].a.shape == (300, 6) and p["train"].b.shape == (300, 6)
    assert p["heldout"].a.shape == (50, 6) and p["heldout"].component.shape == (50,)
    assert p["train"].a.dtype == np.float32 and p["train"].component.dtype == np.int32
    again = data.make_pairs.__wrapped__(num_train=300, num_heldout=50, dim=6, num_components=3, seed=7)
    for split in ("train", "heldout"):
        np.testing.assert_array_equal(p[split].a, again[split].a)
        np.testing.assert_array_equal(p[split].b, again[split].b)
    other = data.make_pairs(num_train=300, num_heldout=50, dim=6, num_components=3, seed=8)
    assert not np.allclose(p["train"].a, other["train"].a)
    assert not np.allclose(p["train"].a[:50], p["heldout"].a)
    with pytest.raises(ValueError):  # cached arrays are read-only
        p["train"].a[0, 0] = 1.0


def test_random_pairing_only_permutes_the_structured_b():
    s = data.make_pairs(num_train=200, num_heldout=10, dim=4, pairing="structured", seed=3)["train"]
    r = data.make_pairs(num_train=200, num_heldout=10, dim=4, pairing="random", seed=3)["train"]
    np.testing.assert_array_equal(s.a, r.a)
    assert not np.allclose(s.b, r.b)
    np.testing.assert_array_equal(np.sort(s.b, axis=0), np.sort(r.b, axis=0))


def test_structured_b_is_exactly_a_mixture_sample():
    # Given its component k, L_k⁻¹ (b − μ_k) must be N(0, I) whatever k is.
    rng = np.random.default_rng(0)
    dists = data._Distributions(rng, 4, 3)
    b, k = dists.b_of(rng.standard_normal((60000, 4)))
    np.testing.assert_allclose(np.bincount(k, minlength=3) / len(k), dists.weights, atol=0.01)
    for j in range(3):
        z = np.linalg.solve(dists.chols_b[j], (b[k == j] - dists.means_b[j]).T).T
        np.testing.assert_allclose(z.mean(0), 0.0, atol=0.06)
        np.testing.assert_allclose(np.cov(z.T), np.eye(4), atol=0.08)


def test_train_dataset_batches_and_shards():
    samples = data.make_pairs(num_train=40, num_heldout=4, dim=3, seed=1)["train"]
    batch = next(iter(data.train_dataset(samples, 8, seed=0)))
    assert batch["a"].shape == (8, 3) and batch["b"].shape == (8, 3)
    rows = set()
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        ds = data.train_dataset(samples, 4, seed=0, input_context=ctx)
        shard = {tuple(r) for b in ds.take(5) for r in np.round(b["a"].numpy(), 5)}
        assert len(shard) == 20 and not rows & shard
        rows |= shard


def test_bad_pairing_and_method_name_the_key():
    with pytest.raises(ConfigError, match=r"data.pairing must be one of .*'bogus'"):
        data.make_pairs(pairing="bogus")
    with pytest.raises(ConfigError, match=r"cka_synthetic.py:cos: unknown method 'cos'; expected one of cos_cka, "):
        tiny_config("cos")
    config = tiny_config()
    config.method = "cos"  # as --config.method=cos would
    with pytest.raises(ConfigError, match=r"method must be one of .*'cos'"):
        TASKS.get("cka_synthetic")(config)


# ---- losses ----------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("main_weight", [1.0, 0.0])
def test_method_loss_matches_numpy(rng, method, main_weight):
    a, b = rng.normal(size=(16, 5)), rng.normal(size=(16, 5)) + 0.5 * rng.normal(size=(16, 1))
    ctx = StepContext(global_batch_size=16, num_replicas=1, gather=identity_gather, main_weight=main_weight)
    loss, metrics = task_lib.method_loss(method, a.astype("float32"), b.astype("float32"), ctx, cka_weight=0.1)
    cos, alignment = np.mean(np_cosine(a, b)), np_linear_cka(a, b)
    expected = {"cos_only": -cos, "cka_only": -alignment, "cos_cka": -main_weight * cos - 0.1 * alignment}[method]
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["cosine"]), cos, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["cka"]), alignment, rtol=1e-5)


def test_loss_fn_uses_both_encoders_outputs(rng):
    task = TASKS.get("cka_synthetic")(tiny_config("cos_cka"))
    model = task.build_model()
    batch = {k: rng.normal(size=(12, 8)).astype("float32") for k in ("a", "b")}
    out = model(batch, training=True)
    ctx = StepContext(global_batch_size=12, num_replicas=1, gather=identity_gather)
    loss, _ = task.loss_fn(model, batch, ctx)
    expected = -np.mean(np_cosine(out["a"], out["b"])) - 0.1 * np_linear_cka(out["a"], out["b"])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    assert out["a"].shape == (12, 8)
    assert not np.allclose(out["a"], out["b"])  # no weight sharing


def test_warmup_gives_the_cosine_term_no_gradient(rng):
    task = TASKS.get("cka_synthetic")(tiny_config("cos_cka"))
    model = task.build_model()
    batch = {k: rng.normal(size=(12, 8)).astype("float32") for k in ("a", "b")}

    def grads(method, main_weight):
        ctx = StepContext(global_batch_size=12, num_replicas=1, gather=identity_gather, main_weight=main_weight)
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
            loss, _ = task_lib.method_loss(method, out["a"], out["b"], ctx, cka_weight=0.1)
        return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

    for warm, cka_only in zip(grads("cos_cka", 0.0), grads("cka_only", 1.0)):
        np.testing.assert_allclose(warm, 0.1 * cka_only, rtol=1e-4, atol=1e-7)
    after = grads("cos_cka", 1.0)
    assert any(not np.allclose(x, 0.1 * y, atol=1e-6) for x, y in zip(after, grads("cka_only", 1.0)))


def test_warmup_steps_train_cka_alone_in_the_loop(tmp_path):
    # With λ = 1 the warm-up loss of cos_cka is exactly cka_only's loss, so
    # its warm-up steps must move the weights exactly as cka_only's do (the
    # gradient test above shows the two differ once the cosine term is on).
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    runs = {}
    for method, warmup in (("cos_cka", 2), ("cka_only", 0)):
        config = tiny_config(method, **{"train.num_steps": 2, "train.cka_warmup_steps": warmup,
                                        "loss.cka_weight": 1.0})
        _, model = tasks.train(config, str(tmp_path / method), strategy=one, log=quiet)
        runs[method] = weights(model)
    for w, c in zip(runs["cos_cka"], runs["cka_only"]):
        np.testing.assert_allclose(w, c, rtol=1e-5, atol=1e-7)
    fresh = TASKS.get("cka_synthetic")(tiny_config()).initial_model()
    assert sum(not np.allclose(a, b) for a, b in zip(weights(fresh), runs["cka_only"])) > 0


# ---- evaluation, replicas, the sweep --------------------------------------

def test_evaluate_matches_numpy_and_rejects_files():
    task = TASKS.get("cka_synthetic")(tiny_config())
    model = task.build_model()
    results = task.evaluate(model, "heldout")
    held, train = task.pairs()["heldout"], task.pairs()["train"]
    emb = model({"a": held.a, "b": held.b}, training=False)
    np.testing.assert_allclose(results["cosine"], np.mean(np_cosine(emb["a"], emb["b"])), rtol=1e-5)
    np.testing.assert_allclose(results["cka"], np_linear_cka(emb["a"], emb["b"]), rtol=1e-5)
    emb = model({"a": train.a, "b": train.b}, training=False)
    np.testing.assert_allclose(results["train_cka"], np_linear_cka(emb["a"], emb["b"]), rtol=1e-5)
    with pytest.raises(ConfigError, match="data.eval_pattern must be 'heldout'"):
        task.evaluate(model, "data/*.tfrecord")


@pytest.mark.slow  # a MirroredStrategy run: ~35 s of CPU
def test_two_replicas_match_one_device_from_the_initial_model(tmp_path, logical_cpus):
    # Plain SGD: weights move by exactly the summed gradients (see replica_atols).
    config = tiny_config("cos_cka", **{"seed": 5, "train.num_steps": 3, "train.cka_warmup_steps": 1,
                                       "optimizer.name": "sgd", "optimizer.learning_rate": 0.5})
    config.optimizer.momentum = 0.0
    with initial_weights(task_lib.CKASynthetic) as recorded:
        res1, one = tasks.train(config, str(tmp_path / "one"), log=quiet,
                               strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]))
        res2, two = tasks.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    # Both runs started from initial_model(), the step-0 point of the curves.
    initial = weights(TASKS.get("cka_synthetic")(config).initial_model())
    for start in recorded:
        for a, b in zip(start, initial):
            np.testing.assert_array_equal(a, b)
    w1, w2 = weights(one), weights(two)
    assert_moved(trainable(one, initial), trainable(one, w1), [v.path for v in one.trainable_weights])
    # Every weight, the batch norms' moving statistics (synchronised) included.
    for a, b, atol in zip(w1, w2, replica_atols(initial, w1, global_batch=32)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    # The metrics (float64, from the embeddings) inherit the weights' rounding: relative to the
    # weights, those differ by at most δ = n²·ε (n = 32, the bound above, whose updates are smaller
    # than the weights). Each of the 3 dense + batch-norm layers passes δ on with a gain of at most
    # 2 (kernel and gamma), so embeddings move by at most 6δ relative, and the mean cosine and linear
    # CKA, both in [-1, 1] and invariant to scale, by at most 2 · 6δ.
    atol = 12 * 32 ** 2 * EPS32
    for key in ("cosine", "cka", "train_cosine", "train_cka"):
        np.testing.assert_allclose(res1[key], res2[key], rtol=0, atol=atol)


def test_export_serves_both_embeddings(tmp_path):
    task = TASKS.get("cka_synthetic")(tiny_config())
    model = task.initial_model()
    task.export(model, str(tmp_path / "export"))
    held = task.pairs()["heldout"]
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](
        a=tf.constant(held.a), b=tf.constant(held.b))
    expected = model({"a": held.a, "b": held.b}, training=False)
    for key in ("a", "b"):
        np.testing.assert_allclose(served[key].numpy(), expected[key], rtol=1e-5, atol=1e-6)


def test_read_eval_scalars_keeps_the_last_value_per_step(tmp_path):
    for values in ((0.1, 0.2), (0.3,)):  # a resumed run rewrites step 0
        writer = tf.summary.create_file_writer(str(tmp_path))
        with writer.as_default():
            for step, v in enumerate(values):
                tf.summary.scalar("eval/cka", v, step=step)
        writer.close()
    scalars = task_lib.read_eval_scalars(str(tmp_path))
    assert set(scalars) == {"eval/cka"}
    np.testing.assert_allclose([scalars["eval/cka"][0], scalars["eval/cka"][1]], [0.3, 0.2], rtol=1e-6)


@pytest.mark.slow  # a fresh process and three trainings: ~35 s of CPU
def test_bin_train_sweep_writes_metrics_and_curves(tmp_path):
    workdir = tmp_path / "sweep"
    overrides = ["--config.data.num_train=256", "--config.data.num_heldout=64", "--config.data.dim=8",
                 "--config.train.batch_size=32", "--config.train.num_steps=4", "--config.train.eval_every=2",
                 "--config.train.cka_warmup_steps=2", "--config.train.checkpoint_every=0", "--export=false"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "train"),
                           "--config=configs/cka_synthetic.py", f"--workdir={workdir}", *overrides],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert set(metrics) == set(METHODS)
    for m in METHODS:
        assert isinstance(metrics[m]["cosine"], float) and 0.0 <= metrics[m]["cka"] <= 1.0
    curves = json.loads((workdir / "curves.json").read_text())
    for m in METHODS:
        assert curves[m]["step"] == [0, 2, 4]
        assert curves[m]["cka"][-1] == pytest.approx(metrics[m]["cka"], rel=1e-5)
        assert curves[m]["cka"][0] == curves["cos_only"]["cka"][0]  # one common initial model
    assert metrics["cos_only"]["cka"] != metrics["cka_only"]["cka"]  # the methods really differ
    png = (workdir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
