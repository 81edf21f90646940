"""Tests of `CrossCLRLoss`: the Keras wrapper, the queue and its checkpoints."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.losses.crossclr_reference import reference_crossclr
from tests.losses.replicas import distribute, mirrored_strategy
from vt_keras.distributed import replica_gather
from vt_keras.errors import ConfigError, UserError
from vt_keras.losses.crossclr import crossclr_loss
from vt_keras.losses.crossclr_queue import CrossCLRLoss, crossclr_local_global

KEYS = ("video_emb", "text_emb", "video_features", "text_features")
WIDTHS = (4, 4, 3, 5)


def _batches(rng, steps, batch):
    """`steps` batches of four float32 arrays; features are non-negative."""
    out = []
    for _ in range(steps):
        video = rng.normal(size=(batch, 4))
        out.append([
            video.astype("float32"),
            (video + rng.normal(size=(batch, 4))).astype("float32"),
            rng.uniform(size=(batch, 3)).astype("float32"),
            rng.uniform(size=(batch, 5)).astype("float32"),
        ])
    return out


class RingBuffer:
    """The queue as the method describes it: write row by row, wrap around."""

    def __init__(self, size):
        self.rows = [None] * size
        self.pointer = 0

    def push(self, batch):
        for r in range(len(batch[0])):
            self.rows[self.pointer] = [x[r] for x in batch]
            self.pointer = (self.pointer + 1) % len(self.rows)

    def filled(self):
        rows = [r for r in self.rows if r is not None]
        return [np.stack([r[i] for r in rows]) for i in range(4)] if rows else None


@pytest.mark.parametrize("queue_size, batch", [(5, 2), (7, 3), (2, 3)])
def test_queue_contents_wrap_around(rng, queue_size, batch):
    loss = CrossCLRLoss(queue_size=queue_size)
    ring = RingBuffer(queue_size)
    step = tf.function(loss.compute)
    for data in _batches(rng, 4, batch):
        step(*data)
        ring.push(data)
        filled = sum(r is not None for r in ring.rows)
        assert int(loss.queue_count.numpy()) == filled
        assert int(loss.queue_pointer.numpy()) == ring.pointer
        for i, queue in enumerate(loss.queues):
            expected = np.stack([r[i] for r in ring.rows[:filled]])
            np.testing.assert_array_equal(queue.numpy()[:filled], expected)


@pytest.mark.parametrize("compat", [False, True])
def test_loss_uses_the_queue_before_enqueueing(rng, compat):
    options = dict(temperature=0.1, weight_temperature=0.01, intra_weight=0.7, prune_threshold=0.85)
    loss = CrossCLRLoss(queue_size=5, reference_compat=compat, **options)
    ring = RingBuffer(5)
    for i, data in enumerate(_batches(rng, 4, 3)):
        got = float(loss.compute(*data))
        queue = ring.filled()
        expected = reference_crossclr(*[x.astype("float64") for x in data], options["temperature"],
                                      options["weight_temperature"], options["intra_weight"],
                                      options["prune_threshold"], compat, queue=queue)
        assert got == pytest.approx(expected, rel=1e-4), f"step {i}"
        if i == 0:  # an empty queue is the plain loss
            assert got == pytest.approx(float(crossclr_loss(*data, reference_compat=compat, **options)), rel=1e-6)
        ring.push(data)


def test_queue_with_multiple_positives_matches_reference(rng):
    options = dict(temperature=0.1, weight_temperature=0.01, intra_weight=0.7, prune_threshold=0.8)
    loss = CrossCLRLoss(queue_size=4, num_positives=2, positive_weight=0.2, **options)
    ring = RingBuffer(4)
    for data in _batches(rng, 3, 3):
        got = float(loss.compute(*data))
        expected = reference_crossclr(*[x.astype("float64") for x in data], options["temperature"],
                                      options["weight_temperature"], options["intra_weight"],
                                      options["prune_threshold"], False, 2, 0.2, queue=ring.filled())
        assert got == pytest.approx(expected, rel=1e-4)
        ring.push(data)


def test_gradients_skip_the_queue(rng):
    loss = CrossCLRLoss(queue_size=6)
    data = [tf.constant(x) for x in _batches(rng, 1, 3)[0]]
    loss.compute(*data)
    with tf.GradientTape() as tape:
        tape.watch(data)
        value = loss.compute(*data)
    grads = tape.gradient(value, data)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads[:2])
    assert grads[2] is None and grads[3] is None  # proximity carries no gradient
    assert not any(q.trainable for q in loss.queues)


@pytest.mark.parametrize("build_before_restore", [False, True])
def test_checkpoint_saves_and_restores_the_queue(rng, tmp_path, build_before_restore):
    batches = _batches(rng, 4, 3)
    loss = CrossCLRLoss(queue_size=5)
    for data in batches[:3]:
        loss.compute(*data)
    path = tf.train.Checkpoint(queue=loss.queue).save(str(tmp_path / "ckpt"))

    restored = CrossCLRLoss(queue_size=5)
    if build_before_restore:
        restored.build(*WIDTHS)
        restored.compute(*batches[3])  # state that the restore must overwrite
    tf.train.Checkpoint(queue=restored.queue).restore(path).assert_existing_objects_matched()
    restored.build(*WIDTHS)  # a deferred restore fills the variables when created
    for a, b in zip(loss.queues, restored.queues):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(restored.queue_pointer.numpy()) == int(loss.queue_pointer.numpy()) == 4
    assert int(restored.queue_count.numpy()) == 5
    assert float(restored.compute(*batches[3])) == float(loss.compute(*batches[3]))


def test_config_round_trip_and_keras_call(rng):
    loss = CrossCLRLoss(temperature=0.05, weight_temperature=0.0055, intra_weight=0.65, prune_threshold=0.9,
                        reference_compat=True, queue_size=3000, num_positives=5, positive_weight=0.2,
                        name="local_crossclr")
    config = loss.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, CrossCLRLoss)
    assert restored.get_config() == config
    assert config["queue_size"] == 3000 and config["reference_compat"] is True
    assert restored.name == "local_crossclr"

    data = _batches(rng, 1, 4)[0]
    plain = CrossCLRLoss(temperature=0.1)
    expected = float(crossclr_loss(*data, temperature=0.1))
    assert float(plain(np.zeros(4), dict(zip(KEYS, data)))) == pytest.approx(expected, rel=1e-6)
    assert float(plain(np.zeros(4), data)) == pytest.approx(expected, rel=1e-6)


def test_errors_name_the_problem(rng):
    with pytest.raises(ConfigError, match="queue_size must be an integer ≥ 0; got -1"):
        CrossCLRLoss(queue_size=-1)
    with pytest.raises(ConfigError, match="weight_temperature must be a number > 0; got 0"):
        CrossCLRLoss(weight_temperature=0)
    loss = CrossCLRLoss(queue_size=4)
    loss.build(*WIDTHS)
    data = _batches(rng, 1, 2)[0]
    with pytest.raises(UserError, match="video_features has width 2 but the queue was built for 3"):
        loss.compute(data[0], data[1], data[2][:, :2], data[3])
    with pytest.raises(UserError, match=r"missing \['text_features'\]"):
        loss(np.zeros(2), dict(zip(KEYS[:3], data)))


def test_local_global_objective(rng):
    local, global_ = _batches(rng, 2, 4)
    total = crossclr_local_global(CrossCLRLoss(temperature=0.1), CrossCLRLoss(temperature=0.2), local, global_)
    expected = (float(crossclr_loss(*local, temperature=0.1))
                + 0.6 * float(crossclr_loss(*global_, temperature=0.2)))
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_replicas_hold_the_same_queue_as_one_device(rng, logical_cpus):
    batches = _batches(rng, 3, 4)
    single = CrossCLRLoss(queue_size=6, temperature=0.1)
    single_losses = [float(single.compute(*data)) for data in batches]

    strategy = mirrored_strategy(logical_cpus)
    with strategy.scope():
        mirrored = CrossCLRLoss(queue_size=6, temperature=0.1)
        mirrored.build(*WIDTHS)

    @tf.function
    def step(*args):
        out = strategy.run(lambda *local: mirrored.compute(*local, gather=replica_gather), args=args)
        return strategy.experimental_local_results(out)

    for data, expected in zip(batches, single_losses):
        dist = [distribute(strategy, x) for x in data]
        assert [float(v) for v in step(*dist)] == pytest.approx([expected, expected], rel=1e-5)
    for queue, reference in zip(mirrored.queues, single.queues):
        for local in strategy.experimental_local_results(queue.value):
            np.testing.assert_array_equal(local.numpy(), reference.numpy())
    pointers = strategy.experimental_local_results(mirrored.queue_pointer.value)
    assert [int(p) for p in pointers] == [int(single.queue_pointer.numpy())] * 2 == [0, 0]


class _CrossCLRHead(keras.layers.Layer):
    """Adds the loss from inside the model, the way `fit()` users use it."""

    def __init__(self, loss, **kwargs):
        super().__init__(**kwargs)
        self.crossclr = loss

    def call(self, inputs):
        self.add_loss(self.crossclr.compute(*inputs, gather=replica_gather))
        return inputs[0]


def test_fit_updates_the_queue_once_per_step(rng):
    video_in, text_in = keras.Input((3,)), keras.Input((5,))
    loss = CrossCLRLoss(queue_size=10, temperature=0.1)
    loss.build(*WIDTHS)
    video_emb, text_emb = keras.layers.Dense(4)(video_in), keras.layers.Dense(4)(text_in)
    model = keras.Model([video_in, text_in], _CrossCLRHead(loss)([video_emb, text_emb, video_in, text_in]))
    model.compile(optimizer="sgd")
    x = [rng.uniform(size=(12, 3)).astype("float32"), rng.uniform(size=(12, 5)).astype("float32")]
    history = model.fit(x, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # 6 steps of 4 rows: 24 rows written, building the model wrote none.
    assert int(loss.queue_pointer.numpy()) == 24 % 10
    assert int(loss.queue_count.numpy()) == 10


def test_stateless_compute_is_compute_without_side_effects(rng):
    batches = _batches(rng, 4, 3)
    stateful = CrossCLRLoss(queue_size=5, temperature=0.1)
    stateless = CrossCLRLoss(queue_size=5, temperature=0.1)
    stateless.build(*WIDTHS)
    state = [v.value for v in stateless.queue.non_trainable_variables]
    # The wrap-around (4 batches of 3 into 5 slots) is part of the state.
    for data in batches:
        value, state = stateless.stateless_compute(state, *data)
        assert float(value) == pytest.approx(float(stateful.compute(*data)), rel=1e-6)
    assert int(stateless.queue_count.numpy()) == 0  # the variables never moved
    stateful_state = {v.path.split("/")[-1]: v.numpy() for v in stateful.queue.non_trainable_variables}
    for variable, value in zip(stateless.queue.non_trainable_variables, state):
        np.testing.assert_array_equal(np.asarray(value), stateful_state[variable.path.split("/")[-1]])
    with pytest.raises(UserError, match="build the loss first"):
        CrossCLRLoss(queue_size=5).stateless_compute([], *batches[0])
