"""Every YouTube-8M config trains on tiny data; the cm_* fusions load and keep a frozen tower; export."""
import glob
import os

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.yt8m_fixtures import (TINY_FRAMES, classifier_variants, tiny_config, variant_config_file,
                                 write_tiny_yt8m)
from vt_keras.cli.common import load_config_file
from vt_keras.errors import ConfigError
from vt_keras.models.video_classifier import (AGGREGATORS, aggregator_inputs, build_video_classifier,
                                             cross_modal_signals, embed_frames)
from vt_keras import tasks
from vt_keras.tasks.yt8m import multilabel_cross_entropy
from vt_keras.train.step import dtype_policy, wrap_optimizer
from vt_keras.train.task import StepContext

CONFIG_FILES = sorted(os.path.splitext(os.path.basename(p))[0]
                      for p in glob.glob(os.path.join(REPO_ROOT, "configs", "yt8m", "*.py")))
# Every classifier variant and the tower (late_fusion.py is pool_late, checked below).
CONFIGS = classifier_variants() + ["correlation_tower"]


def config_file(name):
    return f"configs/yt8m/{name}.py" if name in CONFIG_FILES else variant_config_file(name)


def quiet(*args):
    del args


def one_device():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")), num_videos=24, num_files=1)


@pytest.fixture(scope="module")
def tower_workdir(tiny_data, tmp_path_factory):
    """A tiny correlation tower trained a few steps, shared by the cm_* cases."""
    workdir = str(tmp_path_factory.mktemp("tower") / "w")
    config = tiny_config(tiny_data, config_file="configs/yt8m/correlation_tower.py",
                         **{"train.num_steps": 3, "train.checkpoint_every": 0})
    tasks.train(config, workdir, strategy=one_device(), log=quiet)
    return workdir


def tower_weights(workdir):
    from vt_keras.train.checkpoints import load_config

    _, model = tasks.restore_model(load_config(workdir), workdir)
    return model.get_layer("correlation_tower").get_weights()


def test_every_config_is_covered():
    # The video-level configs are covered by tests/models/test_video_level.py and tests/tasks/test_yt8m_video.py.
    assert CONFIG_FILES == ["classifier", "correlation_tower", "late_fusion", "video_logistic", "video_moe"]
    assert {"pool_late", "pool_early", "netvlad_cm_concat", "rnn_early", "transformer_cm_gated"} <= set(CONFIGS)
    assert len(CONFIGS) == 2 + 3 * 4 + 1
    # The config's aggregators are the builder's.
    assert sorted({name.split("_")[0] for name in classifier_variants()}) == AGGREGATORS.names()
    # bin/train's default is the classifier's default variant.
    default = load_config_file("configs/yt8m/late_fusion.py")
    assert default.to_dict() == load_config_file(variant_config_file("pool_late")).to_dict()
    assert (default.model.aggregator, default.model.fusion) == ("pool", "late")


@pytest.fixture(scope="module")
def tiny_batch(tiny_data):
    """A batch as the classifier tasks read it: frames as uint8 codes (their model_inputs dequantize)."""
    return next(iter(tasks.build_task(tiny_config(tiny_data)).dataset(tiny_data, 8)))


@pytest.fixture(scope="module")
def tiny_float_batch(tiny_data):
    """The same videos with float frames, as the correlation tower's task reads them."""
    return next(iter(tasks.build_task(tiny_config(tiny_data, config_file=config_file("correlation_tower")))
                     .dataset(tiny_data, 8)))


def weights(layer):
    return [np.array(w) for w in layer.get_weights()]


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_trains_two_steps(name, precision, tiny_data, tiny_batch, tiny_float_batch, request):
    batch = tiny_float_batch if name == "correlation_tower" else tiny_batch
    overrides = {}
    if "_cm_" in name:
        overrides["model.tower_workdir"] = request.getfixturevalue("tower_workdir")
    task = tasks.build_task(tiny_config(tiny_data, config_file=config_file(name), **overrides))
    with dtype_policy(precision):  # as the trainer builds it under train.precision
        model = task.build_model()
    optimizer = wrap_optimizer(keras.optimizers.Adam(1e-2), precision)
    optimizer.build(model.trainable_variables)
    task.warm_start(model)
    before = weights(model)
    ctx = StepContext(global_batch_size=8, num_replicas=1, gather=lambda x, axis=0: x, step=optimizer.iterations)
    for _ in range(2):  # eager: tracing a step costs more than two tiny steps
        with tf.GradientTape() as tape:
            loss, _ = task.loss_fn(model, batch, ctx)
            scaled = optimizer.scale_loss(loss) if precision == "mixed_float16" else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        assert np.isfinite(float(loss)) and loss.dtype == tf.float32
    assert any(not np.array_equal(a, b) for a, b in zip(before, weights(model)))
    if "_cm_" in name:
        # Loaded from the tower's workdir and frozen through training.
        layer = model.get_layer("correlation_tower")
        assert not layer.trainable_weights
        for got, want in zip(weights(layer), tower_weights(overrides["model.tower_workdir"])):
            np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_trained_cross_modal_workdir_restores_to_the_same_predictions(tiny_data, tiny_batch, tower_workdir, tmp_path):
    # Keras 3 keeps list-held sublayers (tower stacks, Transformer blocks) out of TensorFlow's object
    # graph; the task tracks every weight by path so that evaluate/export/plots restore them.
    config = tiny_config(tiny_data, config_file=variant_config_file("transformer_cm_concat"),
                         **{"train.num_steps": 2, "train.checkpoint_every": 0, "model.tower_workdir": tower_workdir})
    _, model = tasks.train(config, str(tmp_path / "w"), strategy=one_device(), log=quiet)
    task, restored = tasks.restore_model(config, str(tmp_path / "w"))
    inputs = task.model_inputs(tiny_batch)
    np.testing.assert_allclose(restored(inputs), model(inputs), atol=1e-6)
    for got, want in zip(weights(restored.get_layer("correlation_tower")), tower_weights(tower_workdir)):
        np.testing.assert_array_equal(got, want)


def test_cm_concat_gives_each_modality_the_other_modalitys_embedding(rng):
    video, audio = rng.normal(size=(2, 4, 3)).astype("f"), rng.normal(size=(2, 4, 2)).astype("f")
    out = {"video_embedding": rng.normal(size=(2, 5)).astype("f"), "audio_embedding": rng.normal(size=(2, 5)).astype("f"),
           "probability": np.array([0.2, 0.9], "f")}
    out["embedding"] = np.concatenate([out["video_embedding"], out["audio_embedding"]], -1)
    contexts, g = cross_modal_signals({"fusion": "cm_concat", "cm_concat": "other"}, out)
    assert g is None
    # No branch: the context is appended to every raw frame.
    v, a = embed_frames([video, audio], contexts, [None, None])
    np.testing.assert_allclose(v, np.concatenate([video, np.repeat(out["audio_embedding"][:, None], 4, 1)], -1))
    np.testing.assert_allclose(a, np.concatenate([audio, np.repeat(out["video_embedding"][:, None], 4, 1)], -1))
    contexts, _ = cross_modal_signals({"fusion": "cm_concat", "cm_concat": "both"}, out)
    v, a = embed_frames([video, audio], contexts, [None, None])
    np.testing.assert_allclose(v[..., 3:], np.repeat(out["embedding"][:, None], 4, 1))
    np.testing.assert_allclose(a[..., 2:], np.repeat(out["embedding"][:, None], 4, 1))
    contexts, g = cross_modal_signals({"fusion": "cm_gated"}, out)
    assert contexts == [None, None] and g is out["probability"]
    v, a = embed_frames([video, audio], contexts, [None, None])
    assert v is video and a is audio
    with pytest.raises(ConfigError, match=r"model.cm_concat='sideways' is unknown; expected one of other, both"):
        cross_modal_signals({"fusion": "cm_concat", "cm_concat": "sideways"}, out)


@pytest.mark.parametrize("mode", ["other", "both"])
def test_cm_concat_joins_the_embedding_to_the_branch_input(mode, tiny_data, rng):
    """With a learned frame embedding, CM-C's branch is one dense layer on [frame ; tower embedding] (float64 check)."""
    config = tiny_config(tiny_data, config_file=variant_config_file("transformer_cm_concat"),
                         **{"model.cm_concat": mode, "model.branch_units": 6})
    model = build_video_classifier(config.model, config.data.features, 5, TINY_FRAMES)
    inputs = {"rgb": rng.normal(size=(3, TINY_FRAMES, 8)).astype("f"),
              "audio": rng.normal(size=(3, TINY_FRAMES, 4)).astype("f"), "mask": np.ones((3, TINY_FRAMES), bool)}
    inputs["mask"][0, 5:] = False
    tower = model.get_layer("correlation_tower")((inputs["rgb"], inputs["audio"]), mask=(inputs["mask"],) * 2)
    if mode == "other":
        joined = {"rgb": tower["audio_embedding"], "audio": tower["video_embedding"]}
    else:
        joined = {"rgb": tower["embedding"], "audio": tower["embedding"]}
    frames, correlation, _ = aggregator_inputs(model, config.model, config.data.features, inputs)
    assert correlation is None
    for (name, _), got in zip(config.data.features, frames):
        branch = model.get_layer(f"{name}_branch")
        kernel = np.concatenate([np.asarray(branch.kernel, np.float64), np.asarray(branch.context_kernel, np.float64)])
        e = np.asarray(joined[name], np.float64)
        x = np.concatenate([inputs[name].astype(np.float64), np.repeat(e[:, None], TINY_FRAMES, 1)], -1)
        want = np.maximum(x @ kernel + np.asarray(branch.bias, np.float64), 0.0)
        assert got.shape == (3, TINY_FRAMES, 6)  # the aggregator stays branch_units wide
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_frozen_tower_runs_without_dropout_inside_the_classifier(tiny_data, rng):
    config = tiny_config(tiny_data, config_file=variant_config_file("rnn_cm_concat"))
    config.model.tower = dict(hidden_units=(8,), embedding_dim=4, dropout=0.5)
    config.model.hidden_size = 0
    model = build_video_classifier(config.model, config.data.features, 5, TINY_FRAMES)
    inputs = {"rgb": rng.normal(size=(3, TINY_FRAMES, 8)).astype("f"),
              "audio": rng.normal(size=(3, TINY_FRAMES, 4)).astype("f"), "mask": np.ones((3, TINY_FRAMES), bool)}
    np.testing.assert_array_equal(model(inputs, training=True), model(inputs, training=True))
    tower = model.get_layer("correlation_tower")
    assert not tower.trainable and not tower.trainable_weights and tower.weights


@pytest.mark.parametrize("model_cfg, features, pattern", [
    ({"aggregator": "pool", "fusion": "cm_gated"}, (("rgb", 8), ("audio", 4)), r"aggregator='pool' has no cross-modal"),
    ({"aggregator": "netvlad", "fusion": "cm_concat"}, (("rgb", 8),), r"needs exactly two features"),
    ({"aggregator": "netvlad", "fusion": "middle"}, (("rgb", 8), ("audio", 4)), r"model.fusion='middle' is unknown"),
])
def test_builder_errors_name_the_key(model_cfg, features, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_video_classifier(ml_collections.ConfigDict(model_cfg), features, 5, TINY_FRAMES)


@pytest.mark.slow
def test_cross_modal_export_serves_what_the_model_predicts(tiny_data, tower_workdir, tmp_path):
    config = tiny_config(tiny_data, config_file=variant_config_file("netvlad_cm_concat"),
                         **{"model.tower_workdir": tower_workdir})
    task = tasks.build_task(config)
    model = task.build_model()
    task.warm_start(model)
    export_dir = task.export(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(export_dir)
    records = [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(tiny_data))][:6]
    served = loaded.signatures["serving_default"](example_bytes=tf.constant(records))
    ids, probs, _ = next(task.predict(model, tiny_data, batch_size=6))
    assert [x.decode() for x in served["video_id"].numpy()] == [x.decode() for x in ids]
    np.testing.assert_allclose(served["predictions"].numpy(), -np.sort(-probs, axis=1)[:, :5], rtol=1e-5, atol=1e-6)


def _linear_cka64(x, y):
    """Biased linear CKA in float64, gram form (independent of the library's feature form)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


@pytest.mark.parametrize("name", ["late_fusion", "rnn_cm_gated"])
def test_cka_config_key_aligns_the_two_branches(name, tiny_data, tiny_batch, request):
    overrides = {"model.branch_units": 6, "model.cka.weight": 0.25}
    if "_cm_" in name:
        overrides["model.tower_workdir"] = request.getfixturevalue("tower_workdir")
    task = tasks.build_task(tiny_config(tiny_data, config_file=config_file(name), **overrides))
    model = task.build_model()
    task.warm_start(model)
    ctx = StepContext(global_batch_size=8, num_replicas=1, gather=lambda x, axis=0: x, main_weight=1.0)
    loss, metrics = task.loss_fn(model, tiny_batch, ctx)
    # The aligned vectors: each video's mean branch embedding over its valid frames.
    branches = keras.Model(model.inputs, [model.get_layer("rgb_branch").output, model.get_layer("audio_branch").output])
    video, audio = (np.asarray(t, np.float64) for t in branches(task.model_inputs(tiny_batch)))
    mask = tiny_batch["mask"].numpy().astype(np.float64)[..., None]
    want = _linear_cka64((video * mask).sum(1) / mask.sum(1), (audio * mask).sum(1) / mask.sum(1))
    np.testing.assert_allclose(float(metrics["cka"]), want, rtol=1e-5)
    # The loss is the classification loss plus -λ·CKA (one device: global_scalar is the identity).
    probs = model(task.model_inputs(tiny_batch), training=True)
    ce = float(ctx.mean_over_global_batch(multilabel_cross_entropy(tiny_batch["labels"], probs)))
    np.testing.assert_allclose(float(loss) - ce, -0.25 * want, rtol=1e-4, atol=1e-6)
    assert 0.0 < want <= 1.0


def test_cka_warm_up_trains_the_branches_alone(tiny_data, tiny_batch):
    task = tasks.build_task(tiny_config(tiny_data, **{"model.branch_units": 6, "model.cka.weight": 0.1}))
    model = task.build_model()
    grads = {}
    for main_weight in (0.0, 1.0):
        ctx = StepContext(global_batch_size=8, num_replicas=1, gather=lambda x, axis=0: x, main_weight=main_weight)
        with tf.GradientTape() as tape:
            loss, _ = task.loss_fn(model, tiny_batch, ctx)
            loss = loss + sum(model.losses)  # the MoE's L2 penalty, as the trainer adds it
        grads[main_weight] = dict(zip([v.path for v in model.trainable_variables],
                                      tape.gradient(loss, model.trainable_variables)))
    for path, g in grads[0.0].items():
        if "_branch" in path:
            assert g is not None and np.abs(np.asarray(g)).max() > 0, path
        elif path.startswith("moe") or path.startswith("hidden"):
            # The head only gets the (tiny) MoE L2 penalty, never the classification loss.
            assert g is None or np.abs(np.asarray(g)).max() < 1e-6, path
    gate = [g for path, g in grads[1.0].items() if path.startswith("moe") and "gate_dense/kernel" in path]
    assert len(gate) == 1 and np.abs(np.asarray(gate[0])).max() > 1e-4


def test_cka_run_logs_cka_and_warms_up(tiny_data, tmp_path):
    lines = []
    config = tiny_config(tiny_data, **{"model.branch_units": 6, "model.cka.weight": 0.1, "train.num_steps": 3,
                                       "train.cka_warmup_steps": 1, "train.checkpoint_every": 0})
    tasks.train(config, str(tmp_path / "w"), strategy=one_device(), log=lines.append)
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 3 and all(" cka=" in line for line in steps), steps
    # Step 1 is CKA alone: its loss is -0.1 * CKA (+ the MoE penalty), negative.
    assert float(steps[0].split("loss=")[1].split()[0]) < 0 < float(steps[2].split("loss=")[1].split()[0])


@pytest.mark.parametrize("overrides, pattern", [
    ({"model.cka.weight": 0.1}, r"model.cka.weight > 0 aligns the learned frame embeddings.*model.branch_units"),
    ({"model.cka.weight": -1.0, "model.branch_units": 4}, r"model.cka.weight=-1.0: expected >= 0"),
    ({"model.branch_units": -2}, r"model.branch_units=-2: expected >= 0"),
])
def test_cka_config_errors_name_the_key(tiny_data, overrides, pattern):
    task = tasks.build_task(tiny_config(tiny_data, **overrides))
    with pytest.raises(ConfigError, match=pattern):
        task.build_model()
