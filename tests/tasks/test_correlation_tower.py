"""The correlation tower task: negatives, loss, evaluation, learning, and loading it into cm_* classifiers."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.yt8m_fixtures import tiny_config, variant_config_file
from vt_keras.data.taxonomy import Taxonomy
from vt_keras.errors import CheckpointError, ConfigError
from vt_keras.tasks.correlation_tower import CorrelationTowerTask, negative_pairs, top_level_matrix
from vt_keras import tasks
from vt_keras.train.checkpoints import load_config
from vt_keras.train.task import StepContext

FEATURES = (("rgb", 6), ("audio", 3))
SHAPE = (3, 2)  # 3 top-level categories, 2 children each: 9 classes
FRAMES = 5


def quiet(*args):
    del args


def write_paired_data(directory, num_videos, seed, swap_fraction=0.25):
    """Records whose audio and video both show the top-level category, some audio swapped in from another.

    Also writes taxonomy.json and a manifest.json with the `uncorrelated_audio`
    flags, as the synthetic generator does.
    """
    from vt_keras.data.yt8m_writers import write_frame_records

    rng = np.random.default_rng(seed)
    taxonomy = Taxonomy.from_shape(SHAPE)
    leaves = taxonomy.leaves()
    # Well separated prototypes per top-level category (random ones can nearly coincide in 3 dimensions).
    protos_v = 1.2 * np.eye(FEATURES[0][1])[::2] - 0.3
    protos_a = 1.2 * np.eye(FEATURES[1][1]) - 0.4
    examples, videos = [], []
    for i in range(num_videos):
        leaf = int(rng.choice(leaves))
        root = taxonomy.root(leaf)
        frames = int(rng.integers(2, FRAMES + 1))
        swapped = bool(rng.random() < swap_fraction)
        audio_root = int(rng.choice([r for r in range(SHAPE[0]) if r != root])) if swapped else root
        examples.append({"id": f"v{seed}-{i:03d}", "labels": [root, leaf],
                         "rgb": np.clip(protos_v[root] + 0.2 * rng.normal(size=(frames, 6)), -2, 2),
                         "audio": np.clip(protos_a[audio_root] + 0.2 * rng.normal(size=(frames, 3)), -2, 2)})
        videos.append({"id": examples[-1]["id"], "labels": [root, leaf], "uncorrelated_audio": swapped})
    os.makedirs(directory, exist_ok=True)
    write_frame_records(os.path.join(directory, "pairs-00000-of-00001.tfrecord"), examples)
    taxonomy.save(os.path.join(directory, "taxonomy.json"))
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump({"videos": videos}, f)
    return os.path.join(directory, "pairs-*.tfrecord"), videos


def tower_config(train_pattern, eval_pattern, **overrides):
    overrides = {"data.features": FEATURES, "data.max_frames": FRAMES, "data.num_classes": 9,
                 "data.taxonomy": "auto", "train.batch_size": 16, "eval.batch_size": 16,
                 "model.tower": dict(hidden_units=(16,), embedding_dim=8, dropout=0.0), **overrides}
    return tiny_config(train_pattern, eval_pattern, config_file="configs/yt8m/correlation_tower.py", **overrides)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    train, _ = write_paired_data(str(root / "train"), 96, seed=0)
    valid, videos = write_paired_data(str(root / "valid"), 40, seed=1)
    return train, valid, videos


@pytest.fixture(scope="module")
def trained_tower(data, tmp_path_factory):
    train, valid, _ = data
    workdir = str(tmp_path_factory.mktemp("tower") / "w")
    config = tower_config(train, valid, **{"train.num_steps": 60, "train.checkpoint_every": 0,
                                           "optimizer.learning_rate": 1e-2})
    results, model = tasks.train(config, workdir, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), log=quiet)
    return workdir, results, model


def test_top_level_matrix_maps_every_class_to_its_root():
    taxonomy = Taxonomy.from_shape((3, 2, 2))
    matrix = top_level_matrix(taxonomy)
    roots = [c.id for c in taxonomy.classes if c.level == 0]
    assert matrix.shape == (taxonomy.num_classes, len(roots))
    for c in taxonomy.classes:
        node = c.id
        while taxonomy.parent(node) is not None:
            node = taxonomy.parent(node)
        np.testing.assert_array_equal(matrix[c.id], np.eye(len(roots))[roots.index(node)])


@pytest.mark.parametrize("with_taxonomy", [True, False])
def test_negative_pairs_match_brute_force(rng, with_taxonomy):
    size = 7
    top = (rng.random((size, 3)) < 0.4).astype(np.float32)
    top[2] = 0.0  # a video without a known category is never a negative
    ids = np.array([b"a", b"b", b"c", b"a", b"d", b"e", b"f"])  # one video twice
    for shift in range(size + 1):
        got = negative_pairs(tf.constant(ids), tf.constant(top) if with_taxonomy else None, shift).numpy()
        for i in range(size):
            j = (i - shift) % size
            expected = ids[i] != ids[j]
            if with_taxonomy:
                expected = expected and top[i].any() and top[j].any() and not (top[i] * top[j]).any()
            assert got[i] == expected, (shift, i)


def test_loss_is_weighted_cross_entropy_over_positives_and_kept_negatives(data):
    train, valid, _ = data
    task = CorrelationTowerTask(tower_config(train, valid, **{"loss.negative_weight": 3.0}))
    model = task.build_model()
    batch = next(iter(task.dataset(train, 16, training=False)))
    ctx = StepContext(global_batch_size=32, num_replicas=1, gather=lambda x, axis=0: x, step=tf.constant(5, tf.int64))
    loss, metrics = task.loss_fn(model, batch, ctx)
    # The shift is drawn in the graph: the loss must equal the float64 reference for one shift in [1, B-1].
    roots = batch["labels"].numpy()[:, :3] > 0
    # Every shift's pairs in one call: row block k pairs video i with audio (i - k) mod 16.
    src = (np.arange(16)[None, :] - np.arange(16)[:, None]) % 16
    flat = src.reshape(-1)
    frames = task.model_inputs(batch)  # the dataset yields uint8 codes; the model takes dequantized frames
    probs = model({"rgb": tf.tile(frames["rgb"], [16, 1, 1]), "audio": tf.gather(frames["audio"], flat),
                   "video_mask": tf.tile(batch["mask"], [16, 1]), "audio_mask": tf.gather(batch["mask"], flat)})
    probs = np.asarray(probs["probability"], np.float64).clip(1e-7, 1 - 1e-7).reshape(16, 16)
    p_pos = probs[0]
    candidates = []
    for shift in range(1, 16):
        keep = ~(roots & roots[src[shift]]).any(axis=1)
        ref = (-np.log(p_pos).sum() - 3.0 * (keep * np.log(1 - probs[shift])).sum()) / 32
        acc = ((p_pos >= 0.5).sum() + (keep & (probs[shift] < 0.5)).sum()) / (16 + keep.sum())
        candidates.append((ref, acc))
    matches = [acc for ref, acc in candidates if abs(ref - float(loss)) < 1e-5 * max(1.0, abs(ref))]
    assert matches, (float(loss), candidates)
    assert float(metrics["pair_accuracy"]) == pytest.approx(matches[0], abs=1e-6)


def test_evaluation_is_deterministic_and_counts_the_pairs(data):
    train, valid, videos = data
    config = tower_config(train, valid, **{"eval.negative_shifts": (1, 2), "eval.batch_size": 20})
    task = CorrelationTowerTask(config)
    model = task.build_model()
    first, second = task.evaluate(model, valid), task.evaluate(model, valid)
    assert first == second
    # Brute force over the file order: batches of 20, audio rolled by 1 and 2 within each batch.
    roots = [v["labels"][0] for v in videos]
    expected = 0
    for start in range(0, len(videos), 20):
        block = roots[start:start + 20]
        for shift in (1, 2):
            if shift % len(block):
                expected += sum(block[i] != block[(i - shift) % len(block)] for i in range(len(block)))
    assert first["num_positive_pairs"] == len(videos)
    assert first["num_negative_pairs"] == expected
    assert first["uncorrelated_videos"] == sum(v["uncorrelated_audio"] for v in videos)
    pos, neg = first["num_positive_pairs"], first["num_negative_pairs"]
    assert first["accuracy"] == pytest.approx(
        (pos * (1 - first["false_negative_rate"]) + neg * (1 - first["false_positive_rate"])) / (pos + neg))


def test_tower_learns_the_planted_correlation_and_flags_swapped_audio(trained_tower):
    _, results, _ = trained_tower
    assert results["accuracy"] > 0.85
    assert results["false_positive_rate"] < 0.15
    assert results["uncorrelated_detection_rate"] > 0.7
    assert results["clean_false_negative_rate"] < 0.15


def test_warm_start_copies_the_trained_tower_into_the_classifier(trained_tower, data):
    workdir, _, tower_model = trained_tower
    train, valid, _ = data
    config = tower_config(train, valid, **{"model.tower_workdir": workdir})
    classifier_config = tiny_config(train, valid, config_file=variant_config_file("rnn_cm_gated"), **{
        "data.features": FEATURES, "data.max_frames": FRAMES, "data.num_classes": 9,
        "model.tower": dict(config.model.tower), "model.tower_workdir": workdir})
    task = tasks.build_task(classifier_config)
    model = task.build_model()
    task.warm_start(model)
    layer = model.get_layer("correlation_tower")
    for got, want in zip(layer.get_weights(), tower_model.get_layer("correlation_tower").get_weights()):
        np.testing.assert_array_equal(got, want)
    assert not layer.trainable_weights


@pytest.mark.parametrize("case", ["empty", "missing", "no_checkpoint", "not_a_tower", "tower_size", "features"])
def test_warm_start_errors_name_the_key_and_path(case, trained_tower, data, tmp_path):
    workdir, _, _ = trained_tower
    train, valid, _ = data
    tower = dict(hidden_units=(16,), embedding_dim=8)
    overrides = {"data.features": FEATURES, "data.max_frames": FRAMES, "data.num_classes": 9,
                 "model.tower": tower, "model.tower_workdir": workdir}
    if case == "empty":
        overrides["model.tower_workdir"] = ""
        error, pattern = ConfigError, r"model.tower_workdir is empty.*cm_concat"
    elif case == "missing":
        overrides["model.tower_workdir"] = str(tmp_path / "nowhere")
        error, pattern = CheckpointError, r"model.tower_workdir=.*nowhere: no such directory"
    elif case == "no_checkpoint":
        os.makedirs(tmp_path / "empty")
        overrides["model.tower_workdir"] = str(tmp_path / "empty")
        error, pattern = CheckpointError, r"model.tower_workdir=.*empty has no checkpoint"
    elif case == "not_a_tower":
        ckpt = tmp_path / "clf" / "checkpoints"
        os.makedirs(ckpt)
        tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(ckpt / "ckpt"))
        tiny = tiny_config(train)
        from vt_keras.train.checkpoints import save_config

        save_config(tiny, str(tmp_path / "clf"))
        overrides["model.tower_workdir"] = str(tmp_path / "clf")
        error, pattern = ConfigError, r"config.json has task='yt8m'; expected 'correlation_tower'"
    elif case == "tower_size":
        overrides["model.tower"] = dict(hidden_units=(32,), embedding_dim=8)
        error, pattern = ConfigError, r"model.tower=.*32.*does not match.*model.tower=.*16"
    else:
        overrides["data.features"] = (("rgb", 6), ("audio", 4))
        error, pattern = ConfigError, r"data.features=.*4.*does not match.*data.features=.*3"
    config = tiny_config(train, valid, config_file=variant_config_file("netvlad_cm_concat"), **overrides)
    task = tasks.build_task(config)
    with pytest.raises(error, match=pattern):
        task.warm_start(task.build_model())


@pytest.mark.slow
def test_tower_export_serves_the_probability_of_each_video(trained_tower, data, tmp_path):
    workdir, _, model = trained_tower
    _, valid, _ = data
    config = load_config(workdir)
    task = CorrelationTowerTask(config)
    task.export(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(valid))][:8]
    served = loaded.signatures["serving_default"](example_bytes=tf.constant(records))
    _, pos, _ = task.score_pairs(model, valid)
    np.testing.assert_allclose(served["probability"].numpy(), pos[:8], rtol=1e-5, atol=1e-6)
