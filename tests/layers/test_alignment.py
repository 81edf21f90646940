"""Tests of vt_keras.layers.alignment.CKAAlignment."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored_strategy
from tests.losses.test_cka import np_cka
from vt_keras.errors import ConfigError, UserError
from vt_keras.layers.alignment import CKAAlignment
from vt_keras.testing import run_layer_test

B, T1, T2, D1, D2 = 8, 5, 4, 6, 3


@pytest.fixture
def batch(rng):
    x = rng.normal(size=(B, T1, D1)).astype("float32")
    y = rng.normal(size=(B, T2, D2)).astype("float32")
    y[..., :2] += x[:, :T2, :2]  # some shared structure, so CKA is not tiny
    x_mask = rng.random((B, T1)) > 0.4
    y_mask = rng.random((B, T2)) > 0.4
    x_mask[:, 0] = y_mask[:, 0] = True
    return x, y, x_mask, y_mask


def masked_mean(seq, mask):
    seq, mask = seq.astype(np.float64), mask.astype(np.float64)
    return (seq * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)


def loss_of(layer):
    (loss,) = layer.losses
    return float(loss)


# --- values


def test_default_compares_the_mean_of_each_examples_valid_frames(batch):
    x, y, x_mask, y_mask = batch
    x_mask[3] = False  # an example without video frames is left out
    layer = CKAAlignment(weight=0.3)
    outputs = layer((x, y), mask=(x_mask, y_mask))
    keep = np.arange(B) != 3
    expected = np_cka(masked_mean(x, x_mask)[keep], masked_mean(y, y_mask)[keep])
    assert loss_of(layer) == pytest.approx(-0.3 * expected, abs=1e-6)
    assert float(layer.last_cka) == pytest.approx(expected, abs=1e-6)
    assert float(layer.cka_tracker.result()) == pytest.approx(expected, abs=1e-6)
    np.testing.assert_array_equal(outputs[0], x)
    np.testing.assert_array_equal(outputs[1], y)


@pytest.mark.parametrize("num_samples", [None, "all"])
def test_garbage_in_padded_frames_changes_nothing(batch, num_samples):
    x, y, x_mask, y_mask = batch
    if num_samples == "all":
        # Same mask on both sides and N = every valid position: the draw
        # takes all of them, in batch order, so the value is deterministic.
        y = np.concatenate([y, y[:, :1]], axis=1)[:, :T1]
        y_mask = x_mask
        num_samples = int(x_mask.sum())
    clean = CKAAlignment(num_samples=num_samples, seed=1)
    clean((x, y), mask=(x_mask, y_mask))
    if num_samples is not None:
        expected = np_cka(x[x_mask], y[y_mask])
        assert float(clean.last_cka) == pytest.approx(expected, abs=1e-6)

    def pad(seq, mask, fill):
        seq = np.where(mask[..., None], seq, fill).astype("float32")
        extra = np.full((B, 3, seq.shape[-1]), fill, "float32")
        return np.concatenate([seq, extra], 1), np.concatenate([mask, np.zeros((B, 3), bool)], 1)

    xp, xpm = pad(x, x_mask, 1e30)
    yp, ypm = pad(y, y_mask, np.nan)
    dirty = CKAAlignment(num_samples=num_samples, seed=1)
    dirty((xp, yp), mask=(xpm, ypm))
    assert loss_of(dirty) == pytest.approx(loss_of(clean), abs=1e-6)


# Which rows are drawn and paired: tests/layers/test_alignment_pairing.py.


@pytest.mark.parametrize("pairing", ["position", "example"])
def test_sampling_is_deterministic_given_the_seed(batch, pairing):
    x, y, x_mask, y_mask = batch
    if pairing == "position":  # one time axis
        x, x_mask = x[:, :T2], x_mask[:, :T2]

    def run(seed):
        layer = CKAAlignment(num_samples=8, pairing=pairing, seed=seed)
        values = []
        for _ in range(3):
            layer((x, y), mask=(x_mask, y_mask))
            values.append(loss_of(layer))
        return values

    first = run(5)
    assert run(5) == first
    assert len(set(first)) == 3, "each call draws anew"
    assert run(6) != first


def test_pooled_inputs_use_every_valid_row(rng):
    x = rng.normal(size=(B, D1)).astype("float32")
    y = (rng.normal(size=(B, D2)) + x[:, :D2]).astype("float32")
    layer = CKAAlignment(weight=1.0, num_samples=4, kernel="rbf", debiased=True)
    layer((x, y))
    assert loss_of(layer) == pytest.approx(-np_cka(x, y, "rbf", True), abs=1e-6)
    row_mask = np.arange(B) != 2
    layer((x, y), mask=(row_mask, None))
    expected = np_cka(x[row_mask], y[row_mask], "rbf", True)
    assert loss_of(layer) == pytest.approx(-expected, abs=1e-6)
    # A pooled side next to a sequence: its rows are the example vectors.
    seq = np.repeat(y[:, None], 3, axis=1)
    layer = CKAAlignment(weight=1.0)
    layer((x, seq))
    assert loss_of(layer) == pytest.approx(-np_cka(x, y), abs=1e-6)


def test_too_few_valid_rows_add_zero_and_are_not_counted(batch):
    x, y, x_mask, y_mask = batch
    layer = CKAAlignment(debiased=True)
    layer((x, y), mask=(x_mask, y_mask))
    first = float(layer.last_cka)
    x_mask[3:] = False  # three examples left: below the debiased minimum
    layer((x, y), mask=(x_mask, y_mask))
    assert loss_of(layer) == 0.0
    assert float(layer.last_cka) == first
    assert float(layer.cka_tracker.result()) == pytest.approx(first, abs=1e-7)


# --- Keras integration


def test_layer_conventions_and_save_load(batch):
    x, y, x_mask, y_mask = batch
    init = dict(weight=0.2, num_samples=None, kernel="rbf", debiased=False, rbf_threshold=0.8,
                seed=3)
    run_layer_test(CKAAlignment, init, (x, y), mask=(x_mask, y_mask),
                   expected_output_shape=[(B, T1, D1), (B, T2, D2)], run_training=False)


def test_keras_file_keeps_the_loss(tmp_path, batch):
    x, y, x_mask, y_mask = batch
    inputs = [keras.Input((T1, D1)), keras.Input((T2, D2)),
              keras.Input((T1,), dtype="bool"), keras.Input((T2,), dtype="bool")]
    xe, ye = keras.layers.Dense(4)(inputs[0]), keras.layers.Dense(4)(inputs[1])
    xe, ye = CKAAlignment(weight=0.5, kernel="rbf", debiased=True)((xe, ye), mask=tuple(inputs[2:]))
    model = keras.Model(inputs, [xe, ye])
    model([x, y, x_mask, y_mask])
    before = [float(v) for v in model.losses]
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = [l for l in loaded.layers if isinstance(l, CKAAlignment)][0]
    assert layer.get_config()["debiased"] is True and layer.weight == 0.5
    loaded([x, y, x_mask, y_mask])
    assert [float(v) for v in loaded.losses] == pytest.approx(before, abs=1e-7)


def test_fit_raises_cka_and_shows_it(rng):
    # Two views of one latent code, through different random maps: an
    # encoder pair can align them, a fresh one does not.
    z = rng.normal(size=(64, T1, 3))
    x = np.tanh(z @ rng.normal(size=(3, D1))).astype("float32")
    y = (z[:, :T2] @ rng.normal(size=(3, D2))) ** 3
    y = y.astype("float32")
    x_in, y_in = keras.Input((T1, D1)), keras.Input((T2, D2))
    xe = keras.layers.Dense(8, activation="tanh")(x_in)
    ye = keras.layers.Dense(8, activation="tanh")(y_in)
    xe, ye = CKAAlignment(weight=1.0)((xe, ye))
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(xe))
    model = keras.Model([x_in, y_in], out)
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    history = model.fit([x, y], np.zeros((64, 1), "float32"), batch_size=32, epochs=8, verbose=0)
    assert "cka" in history.history
    assert history.history["cka"][-1] > history.history["cka"][0] + 0.1
    assert history.history["loss"][-1] < history.history["loss"][0] - 0.1


# --- errors


def test_bad_arguments_are_user_errors(batch):
    x, y, _, _ = batch
    with pytest.raises(ConfigError, match="kernel must be one of"):
        CKAAlignment(kernel="cosine")
    with pytest.raises(ConfigError, match=r"num_samples must be None or an integer ≥ 4 .*got 3"):
        CKAAlignment(num_samples=3, debiased=True)


# --- two replicas: the global batch


def _two_replica_run(strategy, layer, arrays):
    replicas = strategy.num_replicas_in_sync
    per_replica = len(arrays[0]) // replicas

    def values(ctx):
        i = ctx.replica_id_in_sync_group
        return tuple(tf.constant(a[i * per_replica:(i + 1) * per_replica]) for a in arrays)

    @tf.function(autograph=False)
    def step(inputs):
        def replica(xs, ys, xm, ym):
            with tf.GradientTape() as tape:
                tape.watch([xs, ys])
                _, _, term = layer((xs, ys), mask=(xm, ym), return_loss=True)
                # The trainer's scaling: a global scalar counts 1/replicas.
                loss = term / replicas
            return term, tf.constant(len(layer.losses)), tape.gradient(loss, [xs, ys])

        return strategy.run(replica, args=inputs)

    loss, count, grads = step(strategy.experimental_distribute_values_from_function(values))
    local = strategy.experimental_local_results
    return (
        [float(v) for v in local(loss)],
        [int(v) for v in local(count)],
        [np.concatenate([g.numpy() for g in local(part)]) for part in grads],
    )


@pytest.mark.parametrize("pooled", [True, False])
def test_two_replicas_compute_the_single_device_value(logical_cpus, batch, pooled):
    x, y, x_mask, y_mask = batch
    init = dict(weight=0.4, kernel="linear", debiased=False)
    if pooled:
        x, y, x_mask, y_mask = x[:, 0], y[:, 0], np.arange(B) != 5, np.ones(B, bool)
        init.update(kernel="rbf", debiased=True)

    single = CKAAlignment(**init)
    xv, yv = tf.constant(x), tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch([xv, yv])
        single((xv, yv), mask=(x_mask, y_mask))
        (expected,) = single.losses
    expected_grads = [g.numpy() for g in tape.gradient(expected, [xv, yv])]

    strategy = mirrored_strategy(logical_cpus)
    with strategy.scope():
        # Built before the step, as a model would be: variables created
        # inside a replicated tf.function break it.
        layer = CKAAlignment(**init)
        layer.build((x.shape, y.shape))
    losses, counts, grads = _two_replica_run(strategy, layer, (x, y, x_mask, y_mask))
    assert counts == [0, 0], "with return_loss the layer adds no loss"
    assert losses == pytest.approx([float(expected)] * 2, abs=1e-6)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert float(layer.last_cka.numpy()) == pytest.approx(float(single.last_cka), abs=1e-6)
    assert float(layer.cka_tracker.result()) == pytest.approx(float(single.last_cka), abs=1e-6)


@pytest.mark.parametrize("pairing", ["position", "example"])
def test_two_replicas_split_num_samples(logical_cpus, rng, pairing):
    # Three valid video frames in each replica's half.
    x = rng.normal(size=(B, 2, D1)).astype("float32")
    mask = np.zeros((B, 2), bool)
    half = B * 2 // 2
    mask.flat[[0, 3, 6, half + 1, half + 2, half + 7]] = True
    valid_positions = np.flatnonzero(mask)
    # 5 rows: each replica draws 3 (all its eligible frames, in batch order)
    # and the second keeps 2, so CKA sees the first five valid video frames.
    used = valid_positions[:5]
    if pairing == "position":
        # y is also valid where x is not: only frames valid in both are drawn.
        y = (rng.normal(size=(B, 2, D2)) + x[..., :D2]).astype("float32")
        y_mask = mask.copy()
        y_mask.flat[[1, half + 3]] = True
        y_used = used
    else:
        # One valid frame (the last of three) per video: the pair of video
        # frame b·2 + t is y frame b·3 + 2, whatever the draw.
        y = (rng.normal(size=(B, 3, D2)) + x[:, :1, :D2]).astype("float32")
        y_mask = np.zeros((B, 3), bool)
        y_mask[:, 2] = True
        y_used = used // 2 * 3 + 2
    strategy = mirrored_strategy(logical_cpus)
    with strategy.scope():
        layer = CKAAlignment(weight=1.0, num_samples=5, pairing=pairing, seed=0)
        layer.build((x.shape, y.shape))
    losses, _, grads = _two_replica_run(strategy, layer, (x, y, mask, y_mask))
    expected = np_cka(x.reshape(-1, D1)[used], y.reshape(-1, D2)[y_used])
    assert losses == pytest.approx([-expected] * 2, abs=1e-6)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_two_replicas_without_return_loss_is_a_clear_error(logical_cpus, batch):
    x, y, x_mask, y_mask = batch
    strategy = mirrored_strategy(logical_cpus)
    with strategy.scope():
        layer = CKAAlignment(weight=0.4, name="align")
        layer.build((x.shape, y.shape))
    with pytest.raises(UserError, match=r"align \(CKAAlignment\): called by one of 2 replicas without "
                                        r"return_loss=True"):
        _two_replica_run(strategy, AddLossMode(layer), (x, y, x_mask, y_mask))


class AddLossMode:
    """Calls the layer the default way (add_loss), whatever the caller asks for."""

    def __init__(self, layer):
        self.layer, self.losses = layer, []

    def __call__(self, inputs, mask=None, return_loss=False):
        outputs = self.layer(inputs, mask=mask)
        return outputs + (tf.add_n(self.layer.losses),)


def test_return_loss_gives_the_add_loss_term(batch):
    x, y, x_mask, y_mask = batch
    adding = CKAAlignment(weight=0.3, kernel="rbf")
    returning = CKAAlignment(weight=0.3, kernel="rbf")
    outputs = adding((x, y), mask=(x_mask, y_mask))
    x_out, y_out, term = returning((x, y), mask=(x_mask, y_mask), return_loss=True)
    assert float(term) == pytest.approx(loss_of(adding), abs=1e-7)
    assert returning.losses == []
    np.testing.assert_array_equal(np.asarray(x_out), np.asarray(outputs[0]))
    np.testing.assert_array_equal(np.asarray(y_out), np.asarray(outputs[1]))
    # In a functional model the term is an output like any other.
    inputs = [keras.Input((T1, D1)), keras.Input((T2, D2))]
    model = keras.Model(inputs, CKAAlignment(weight=0.3, kernel="rbf")(tuple(inputs), return_loss=True)[2])
    assert float(model([x, y])) == pytest.approx(float(CKAAlignment(weight=0.3, kernel="rbf")(
        (x, y), return_loss=True)[2]), abs=1e-7)
