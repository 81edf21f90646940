"""Tests of RAdam against a float64 numpy re-derivation of Liu et al. 2020, Algorithm 2."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored_strategy

from vt_keras.errors import ConfigError
from vt_keras.optimizers import RAdam


def numpy_radam(params, grads_per_step, lr, beta_1=0.9, beta_2=0.999, eps=1e-7,
                threshold=5.0, weight_decay=0.0):
    """The published rule in float64; `lr` is a function of the 0-based step."""
    params = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    rho_inf = 2.0 / (1.0 - beta_2) - 1.0
    branches = []
    for t, grads in enumerate(grads_per_step, start=1):
        rho = rho_inf - 2.0 * t * beta_2**t / (1.0 - beta_2**t)
        rectified = rho > threshold
        branches.append(rectified)
        alpha = lr(t - 1)
        for i, g in enumerate(grads):
            params[i] = params[i] - alpha * weight_decay * params[i]
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
            v[i] = beta_2 * v[i] + (1.0 - beta_2) * g * g
            m_hat = m[i] / (1.0 - beta_1**t)
            if rectified:
                r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                v_hat = np.sqrt(v[i] / (1.0 - beta_2**t))
                params[i] = params[i] - alpha * r * m_hat / (v_hat + eps)
            else:
                params[i] = params[i] - alpha * m_hat
    return params, branches


def run_keras(optimizer, params, grads_per_step, compiled):
    variables = [keras.Variable(p.astype(np.float32)) for p in params]
    optimizer.build(variables)

    def step(grads):
        optimizer.apply_gradients(zip(grads, variables))

    if compiled:
        step = tf.function(step)
    for grads in grads_per_step:
        step([tf.constant(g, tf.float32) for g in grads])
    return [v.numpy() for v in variables]


def make_problem(rng, steps=20):
    params = [rng.normal(size=(3,)), rng.normal(size=(2, 2))]
    grads = [[rng.normal(size=p.shape) for p in params] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("threshold", [5.0, 4.0])
@pytest.mark.parametrize("compiled", [False, True])
def test_matches_the_published_rule(rng, threshold, compiled):
    params, grads = make_problem(rng)
    want, branches = numpy_radam(params, grads, lr=lambda t: 0.05, threshold=threshold)
    # Both branches run: momentum steps first, rectified steps afterwards.
    assert not branches[0] and branches[-1]
    # With beta_2 = 0.999, rho_5 = 4.996 lies between the two thresholds.
    assert branches[4] == (threshold == 4.0)
    got = run_keras(RAdam(learning_rate=0.05, sma_threshold=threshold), params, grads, compiled)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_thresholds_give_different_trajectories(rng):
    params, grads = make_problem(rng, steps=6)
    four = run_keras(RAdam(0.05, sma_threshold=4.0), params, grads, compiled=False)
    five = run_keras(RAdam(0.05, sma_threshold=5.0), params, grads, compiled=False)
    assert not np.allclose(four[0], five[0], atol=1e-4)


def test_schedule_and_decoupled_weight_decay(rng):
    params, grads = make_problem(rng)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.9)
    want, _ = numpy_radam(params, grads, lr=lambda t: 0.05 * 0.9 ** (t / 2), weight_decay=0.1)
    got = run_keras(RAdam(schedule, weight_decay=0.1), params, grads, compiled=True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_global_clipnorm_clips_before_the_step(rng):
    params, grads = make_problem(rng, steps=8)
    clipped = []
    for step_grads in grads:
        norm = np.sqrt(sum(np.sum(g**2) for g in step_grads))
        clipped.append([g * min(1.0, 0.5 / norm) for g in step_grads])
    want, _ = numpy_radam(params, clipped, lr=lambda t: 0.05, threshold=4.0)
    got = run_keras(RAdam(0.05, sma_threshold=4.0, global_clipnorm=0.5), params, grads, False)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_serialization_round_trip():
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=100)
    opt = RAdam(schedule, beta_1=0.8, beta_2=0.99, epsilon=1e-6, sma_threshold=4.0,
                weight_decay=0.01, clipnorm=1.0)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, RAdam)
    assert restored.get_config() == opt.get_config()
    assert restored.sma_threshold == 4.0 and restored.clipnorm == 1.0


def test_fit_reduces_loss_and_survives_save_load(tmp_path, rng):
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=RAdam(learning_rate=0.2), loss="mse")
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, RAdam)
    assert int(loaded.optimizer.iterations.numpy()) == 60


def test_mirrored_strategy_matches_single_device(rng, logical_cpus):
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    w0 = rng.normal(size=(3, 1)).astype(np.float32)

    def train(strategy):
        with strategy.scope():
            w = keras.Variable(w0)
            opt = RAdam(learning_rate=0.1, sma_threshold=4.0)
            opt.build([w])

        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                # Scaled by the global batch so the summed replica gradients
                # equal the full-batch mean gradient.
                loss = tf.reduce_sum((xb @ w - yb) ** 2) / 8.0
            opt.apply_gradients([(tape.gradient(loss, w), w)])

        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat(5)
        step = tf.function(lambda b: strategy.run(replica_step, args=b))
        for batch in strategy.experimental_distribute_dataset(dataset):
            step(batch)
        return w.numpy()

    single = train(tf.distribute.OneDeviceStrategy(logical_cpus[0]))
    two_replicas = mirrored_strategy(logical_cpus)
    assert two_replicas.num_replicas_in_sync == 2
    mirrored = train(two_replicas)
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)
    assert not np.allclose(single, w0)


def test_invalid_hyperparameters():
    with pytest.raises(ConfigError, match="sma_threshold must be >= 4"):
        RAdam(sma_threshold=3.0)
    with pytest.raises(ConfigError, match="beta_1"):
        RAdam(beta_1=1.0)
