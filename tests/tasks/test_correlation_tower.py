"""The correlation tower task: negatives and their mining, loss, replicas, evaluation, learning, and loading it
into cm_* classifiers."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored_strategy
from tests.tasks.replicas import assert_moved, initial_weights, replica_atols, weights
from tests.yt8m_fixtures import tiny_config, variant_config_file
from vt_keras import distributed
from vt_keras.data.taxonomy import Taxonomy
from vt_keras.errors import CheckpointError, ConfigError
from vt_keras.tasks.correlation_tower import (CorrelationTowerTask, candidate_shifts, negative_pairs,
                                              select_negatives, top_level_matrix)
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
    # Training data with a tenth of the audio swapped, as in the embedded data: hard negatives pick the swapped
    # tracks (true matches in content, negatives by label), and at a quarter they outweigh the positives.
    train, _ = write_paired_data(str(root / "train"), 96, seed=0, swap_fraction=0.1)
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


def identity_ctx(global_batch, step=5, num_replicas=1):
    return StepContext(global_batch_size=global_batch, num_replicas=num_replicas, gather=distributed.identity_gather,
                       step=tf.constant(step, tf.int64))


def pair_probabilities(model, batch):
    """float64 `[B, B]`: row i, column j is the full model's P(video_i, audio_j), on the frames, pair by pair."""
    size = int(batch["mask"].shape[0])
    video = np.repeat(np.arange(size), size)
    audio = np.tile(np.arange(size), size)
    out = model({"rgb": tf.gather(batch["rgb"], video), "audio": tf.gather(batch["audio"], audio),
                 "video_mask": tf.gather(batch["mask"], video), "audio_mask": tf.gather(batch["mask"], audio)},
                training=False)
    return np.asarray(out["probability"], np.float64).reshape(size, size)


def valid_matrix(batch):
    """bool `[B, B]`, brute force: j may be i's negative (other id; both with a root, no root shared)."""
    labels = batch["labels"].numpy()
    roots = labels[:, :SHAPE[0]] > 0  # classes 0..2 are the roots of Taxonomy.from_shape(SHAPE)
    ids = batch["id"].numpy()
    valid = np.zeros((len(ids), len(ids)), bool)
    for i in range(len(ids)):
        for j in range(len(ids)):
            valid[i, j] = (ids[i] != ids[j] and roots[i].any() and roots[j].any()
                           and not (roots[i] & roots[j]).any())
    return valid, roots


@pytest.fixture(scope="module")
def batch16(data):
    train, valid, _ = data
    task = CorrelationTowerTask(tower_config(train, valid))
    return next(iter(task.dataset(train, 16, training=False)))


def test_candidate_shifts_are_distinct_reproducible_and_in_range():
    for size, num in ((16, 3), (16, 15), (16, 40), (2, 4), (1, 3)):
        shifts = candidate_shifts(size, num, tf.constant([0, 7], tf.int64)).numpy()
        assert len(shifts) == min(num, size - 1) == len(set(shifts.tolist())), (size, num, shifts)
        assert all(1 <= s <= size - 1 for s in shifts), (size, shifts)
        again = candidate_shifts(tf.constant(size), num, tf.constant([0, 7], tf.int64)).numpy()
        np.testing.assert_array_equal(shifts, again)
    draws = {tuple(candidate_shifts(64, 8, tf.constant([0, step], tf.int64)).numpy()) for step in range(5)}
    assert len(draws) == 5  # a new draw every step


def test_select_negatives_on_a_hand_example():
    scores = tf.constant([[0.2, 0.9, 0.6], [0.7, 0.1, 0.4], [0.3, 0.8, 0.8], [0.5, 0.5, 0.5]])
    valid = tf.constant([[True, False, True], [False, False, False], [True, True, True], [False, True, True]])
    # Row 0: 0.9 is not valid, so 0.6 (index 2); row 1: nothing valid; row 2: a tie, the first; row 3: first valid.
    index, found = select_negatives(scores, valid, "hardest")
    np.testing.assert_array_equal(found.numpy(), [True, False, True, True])
    np.testing.assert_array_equal(index.numpy()[[0, 2, 3]], [2, 1, 1])
    index, found = select_negatives(scores, valid, "random")  # the first valid candidate in the drawn order
    np.testing.assert_array_equal(index.numpy()[[0, 2, 3]], [0, 0, 1])
    np.testing.assert_array_equal(found.numpy(), [True, False, True, True])


# Float32 scores of the pooled pair and of the full model on frames may differ in their last bits; a choice
# between two candidates closer than this is a tie either way (the test then accepts both).
SCORE_TIE = 1e-5


@pytest.mark.parametrize("negatives,num", [("hardest", 3), ("hardest", 15), ("hardest", 40), ("random", 3)])
def test_mined_negatives_are_the_highest_scoring_valid_candidates(data, batch16, negatives, num):
    train, valid_pattern, _ = data
    task = CorrelationTowerTask(tower_config(train, valid_pattern, **{"loss.negatives": negatives,
                                                                       "loss.num_negatives": num}))
    model = task.build_model()
    mined = task.mine_negatives(model, batch16, identity_ctx(16, step=3))
    probs, (valid, roots) = pair_probabilities(model, batch16), valid_matrix(batch16)
    # The candidates: the draw of the task's seed and the step, row i gets (i - s) mod 16.
    shifts = candidate_shifts(16, num, tf.constant([0, 3], tf.int64)).numpy()
    expected_candidates = (np.arange(16)[:, None] - shifts[None, :]) % 16
    np.testing.assert_array_equal(mined["candidates"].numpy(), expected_candidates)
    source, found = mined["source"].numpy(), mined["found"].numpy()
    assert found.sum() >= 8  # the test data has three roots: most rows have a valid candidate
    for i in range(16):
        options = [j for j in expected_candidates[i] if valid[i, j]]
        assert found[i] == bool(options), i
        if not options:
            continue
        j = source[i]
        assert j in options and not (roots[i] & roots[j]).any(), (i, j)
        if negatives == "random":
            assert j == options[0], (i, j, options)
            continue
        best = max(probs[i, k] for k in options)
        assert probs[i, j] >= best - SCORE_TIE, (i, j, probs[i, j], best)
        runner_up = max([probs[i, k] for k in options if k != j], default=-1.0)
        if best - runner_up > SCORE_TIE:
            assert probs[i, j] == best, i
        np.testing.assert_allclose(mined["scores"].numpy()[i, list(expected_candidates[i]).index(j)],
                                   probs[i, j], atol=SCORE_TIE)
    # The chosen tracks are the sources' audio and masks.
    np.testing.assert_array_equal(mined["audio"].numpy(), batch16["audio"].numpy()[source])
    np.testing.assert_array_equal(mined["audio_mask"].numpy(), batch16["mask"].numpy()[source])


def test_mining_ignores_what_padded_frames_hold(data, batch16):
    train, valid, _ = data
    task = CorrelationTowerTask(tower_config(train, valid, **{"loss.num_negatives": 15}))
    model = task.build_model()
    ctx = identity_ctx(16)
    assert not batch16["mask"].numpy().all()  # some videos are shorter than FRAMES
    noisy = dict(batch16)
    pad = ~batch16["mask"].numpy()[..., None]
    for name, dim in FEATURES:
        noise = np.random.default_rng(0).normal(size=(16, FRAMES, dim)).astype(np.float32) * 50
        noisy[name] = tf.constant(np.where(pad, noise, batch16[name].numpy()))
    clean_mined, noisy_mined = task.mine_negatives(model, batch16, ctx), task.mine_negatives(model, noisy, ctx)
    np.testing.assert_array_equal(clean_mined["source"].numpy(), noisy_mined["source"].numpy())
    np.testing.assert_allclose(clean_mined["scores"].numpy(), noisy_mined["scores"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(float(task.loss_fn(model, batch16, ctx)[0]), float(task.loss_fn(model, noisy, ctx)[0]),
                               rtol=1e-6)


def test_loss_is_weighted_cross_entropy_of_positives_and_hardest_negatives(data, batch16):
    train, valid_pattern, _ = data
    # num_negatives >= B - 1: every other video is a candidate, so the choice is the brute-force maximum.
    task = CorrelationTowerTask(tower_config(train, valid_pattern, **{"loss.negative_weight": 3.0,
                                                                       "loss.num_negatives": 15}))
    model = task.build_model()
    loss, metrics = task.loss_fn(model, batch16, identity_ctx(32))
    probs, (valid, _) = pair_probabilities(model, batch16), valid_matrix(batch16)
    probs = probs.clip(1e-7, 1 - 1e-7)
    p_pos = np.diag(probs)
    hardest = np.where(valid, probs, -np.inf).max(axis=1)  # -inf: no valid negative
    found = np.isfinite(hardest)
    assert 8 <= found.sum() < 16 or found.all()
    expected = (-np.log(p_pos).sum() - 3.0 * np.log(1 - hardest[found]).sum()) / 32  # global batch 32
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    accuracy = ((p_pos >= 0.5).sum() + (hardest[found] < 0.5).sum()) / (16 + found.sum())
    assert float(metrics["pair_accuracy"]) == pytest.approx(accuracy, abs=1e-6)
    assert float(metrics["negative_score"]) == pytest.approx(hardest[found].mean(), abs=1e-5)
    # The contribution of one of two replicas (same global batch) is its share of the global mean.
    half, _ = task.loss_fn(model, batch16, identity_ctx(32, num_replicas=2))
    np.testing.assert_allclose(float(half), float(loss), rtol=1e-6)


def test_mining_under_two_replicas_is_that_of_one_device(data, batch16, logical_cpus):
    train, valid_pattern, _ = data
    task = CorrelationTowerTask(tower_config(train, valid_pattern, **{"loss.num_negatives": 6}))
    strategy = mirrored_strategy(logical_cpus)
    with strategy.scope():
        model = task.build_model()
    reference = task.build_model()
    reference.set_weights(model.get_weights())
    one = task.mine_negatives(reference, batch16, identity_ctx(16))
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: {k: v[8 * ctx.replica_id_in_sync_group:8 * (ctx.replica_id_in_sync_group + 1)]
                     for k, v in batch16.items()})

    @tf.function
    def mine(batch):
        ctx = StepContext(global_batch_size=16, num_replicas=2, gather=distributed.replica_gather,
                          step=tf.constant(5, tf.int64))
        out = task.mine_negatives(model, batch, ctx)
        return out["source"], out["found"], out["scores"]

    per_replica = strategy.run(mine, args=(halves,))
    source, found, scores = (np.concatenate([t.numpy() for t in strategy.experimental_local_results(x)])
                             for x in per_replica)
    np.testing.assert_array_equal(found, one["found"].numpy())
    np.testing.assert_allclose(scores, one["scores"].numpy(), atol=SCORE_TIE)
    # Same candidates, same scores up to rounding: the same choices, except between candidates tied within it.
    for i in np.flatnonzero(source != one["source"].numpy()):
        cands = list(one["candidates"].numpy()[i])
        gap = one["scores"].numpy()[i, cands.index(one["source"].numpy()[i])] - scores[i, cands.index(source[i])]
        assert abs(gap) < SCORE_TIE, (i, gap)


@pytest.mark.slow
def test_two_replicas_train_the_tower_as_one_device(data, tmp_path, logical_cpus):
    train, valid, _ = data
    # One step of plain SGD: both runs mine with the same initial weights, so the same negatives, and the
    # weights move by the summed gradients (see replica_atols).
    config = tower_config(train, valid, **{"train.num_steps": 1, "train.checkpoint_every": 0,
                                           "optimizer.name": "sgd", "optimizer.learning_rate": 1.0,
                                           "optimizer.momentum": 0.0, "loss.num_negatives": 6})
    with initial_weights(CorrelationTowerTask) as recorded:
        _, one = tasks.train(config, str(tmp_path / "one"), log=quiet,
                            strategy=tf.distribute.OneDeviceStrategy(logical_cpus[0]))
        _, two = tasks.train(config, str(tmp_path / "two"), strategy=mirrored_strategy(logical_cpus), log=quiet)
    start_one, start_two = recorded
    for a, b in zip(start_one, start_two):
        np.testing.assert_array_equal(a, b)
    w1, w2 = weights(one), weights(two)
    assert_moved(start_one, w1, [w.path for w in one.weights])
    for a, b, atol in zip(w1, w2, replica_atols(start_one, w1, global_batch=16)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("key,value,message", [
    ("loss.negatives", "hard", "loss.negatives='hard' is unknown; expected one of random, hardest"),
    ("loss.num_negatives", 0, "loss.num_negatives=0: expected an int >= 1"),
])
def test_bad_negative_settings_are_one_line(data, key, value, message):
    train, valid, _ = data
    with pytest.raises(ConfigError, match=message):
        CorrelationTowerTask(tower_config(train, valid, **{key: value}))


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
