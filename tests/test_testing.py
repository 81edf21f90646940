"""Tests of vt_keras.testing.run_layer_test on small toy layers."""
import keras
import numpy as np
import pytest
from keras import ops

from vt_keras.testing import run_layer_test


@keras.saving.register_keras_serializable(package="vt_keras_tests")
class _MaskedMeanDense(keras.layers.Layer):
    """Masked mean over time then a dense; `respect_mask=False` is a planted bug."""

    def __init__(self, units, respect_mask=True, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.respect_mask = respect_mask
        self.supports_masking = True
        self.dense = keras.layers.Dense(units, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build((input_shape[0], input_shape[-1]))

    def call(self, inputs, mask=None):
        if mask is None or not self.respect_mask:
            mask = ops.ones(ops.shape(inputs)[:2], "bool")
        w = ops.cast(mask, inputs.dtype)[..., None]
        pooled = ops.sum(inputs * w, axis=1) / ops.maximum(ops.sum(w, axis=1), 1.0)
        return self.dense(pooled)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, respect_mask=self.respect_mask)
        return config


@keras.saving.register_keras_serializable(package="vt_keras_tests")
class _PairGate(keras.layers.Layer):
    """Two sequence inputs with masks and a `gate=` kwarg; a dict output."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True
        self.dense_a = keras.layers.Dense(units, dtype=self.dtype_policy)
        self.dense_b = keras.layers.Dense(units, dtype=self.dtype_policy)

    def build(self, input_shape):
        a_shape, b_shape = input_shape
        self.dense_a.build((None, a_shape[-1]))
        self.dense_b.build((None, b_shape[-1]))

    def _pool(self, x, m):
        w = ops.cast(m, x.dtype)[..., None]
        return ops.sum(x * w, axis=1) / ops.maximum(ops.sum(w, axis=1), 1.0)

    def call(self, inputs, mask=None, gate=None):
        a, b = inputs
        ma, mb = mask
        ya = self.dense_a(self._pool(a, ma))
        yb = self.dense_b(self._pool(b, mb))
        if gate is not None:
            yb = yb * ops.cast(gate, yb.dtype)[:, None]
        return {"sum": ya + yb, "a": ya}

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


def _data(rng, b=3, t=5, d=4):
    x = rng.normal(size=(b, t, d)).astype("float32")
    m = np.ones((b, t), bool)
    m[0, 3:] = False
    m[2, 1:] = False
    return x, m


def test_passes_for_a_correct_layer(rng):
    x, m = _data(rng)
    out = run_layer_test(
        _MaskedMeanDense, {"units": 2}, x, mask=m, expected_output_shape=(3, 2),
        run_masking_invariance=True, train_eagerly=False,
    )
    assert out.shape == (3, 2)


def test_handles_tuple_inputs_masks_kwargs_and_dict_outputs(rng):
    a, ma = _data(rng)
    b, mb = _data(rng, d=2)
    out = run_layer_test(
        _PairGate, {"units": 3}, (a, b), mask=(ma, mb),
        call_kwargs={"gate": rng.uniform(size=(3,)).astype("float32")},
        expected_output_shape={"sum": (3, 3), "a": (3, 3)},
        run_masking_invariance=True,
    )
    assert set(out) == {"sum", "a"}


def test_catches_a_layer_that_ignores_its_mask(rng):
    x, m = _data(rng)
    with pytest.raises(AssertionError, match="masking invariance"):
        run_layer_test(
            _MaskedMeanDense, {"units": 2, "respect_mask": False}, x, mask=m,
            run_masking_invariance=True, run_training=False, run_mixed_precision=False,
        )


def test_catches_a_wrong_output_shape(rng):
    x, m = _data(rng)
    with pytest.raises(AssertionError, match="output shape"):
        run_layer_test(_MaskedMeanDense, {"units": 2}, x, mask=m,
                       expected_output_shape=(3, 5))


def test_catches_a_config_that_forgets_an_argument(rng):
    @keras.saving.register_keras_serializable(package="vt_keras_tests")
    class Forgetful(_MaskedMeanDense):
        def get_config(self):
            config = super().get_config()
            del config["units"]
            return config

    x, m = _data(rng)
    with pytest.raises(AssertionError, match="lacks the init argument 'units'"):
        run_layer_test(Forgetful, {"units": 2}, x, mask=m)


def test_catches_an_untrained_weight(rng):
    @keras.saving.register_keras_serializable(package="vt_keras_tests")
    class DeadWeight(_MaskedMeanDense):
        def build(self, input_shape):
            super().build(input_shape)
            self.unused = self.add_weight(shape=(2,), name="unused")

    x, m = _data(rng)
    with pytest.raises(AssertionError, match="unchanged.*unused"):
        run_layer_test(DeadWeight, {"units": 2}, x, mask=m, run_mixed_precision=False)
