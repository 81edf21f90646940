"""The video-level models against float64 numpy re-derivations of the starter code's definitions.

The starter code (google/youtube-8m, `video_level_models.py`) defines, on the
concatenated video-level features x:

- `LogisticModel`: p = sigmoid(x W + b), with TF1's `l2_regularizer(1e-8)`
  on W, whose loss is 1e-8 · Σ W² / 2 (`tf.nn.l2_loss` halves the sum);
- `MoeModel`: gate logits x G (no bias) reshaped to [B·C, M + 1], softmax;
  expert logits x E + e reshaped to [B·C, M], sigmoid; p = Σ_{m<M} gate_m ·
  expert_m, so the (M+1)-th gate entry is a dummy expert that always says 0;
  the same regulariser on G and E (not on e).

The numpy code below computes exactly that from the layers' weights.
"""
import keras
import ml_collections
import numpy as np
import pytest

from vt_keras.cli.common import load_config_file
from vt_keras.errors import ConfigError
from vt_keras.models.video_level import build_video_level_classifier
from vt_keras.train.step import dtype_policy

FEATURES = (("mean_rgb", 6), ("mean_audio", 3))
CLASSES = 4
STARTER_L2 = 1e-8


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def starter_logistic(x, kernel, bias):
    return sigmoid(x @ kernel + bias)


def starter_moe(x, gate_kernel, expert_kernel, expert_bias, num_mixtures):
    gates = softmax((x @ gate_kernel).reshape(-1, num_mixtures + 1))
    experts = sigmoid((x @ expert_kernel + expert_bias).reshape(-1, num_mixtures))
    return (gates[:, :num_mixtures] * experts).sum(axis=1).reshape(-1, CLASSES)


def starter_l2(*kernels):
    """TF1's l2_regularizer(1e-8) summed over the regularised kernels: 1e-8 · Σ w² / 2 each."""
    return sum(STARTER_L2 * np.sum(np.square(k.astype(np.float64))) / 2 for k in kernels)


def config_model(name):
    return load_config_file(f"configs/yt8m/video_{name}.py").model


def inputs(rng, batch=5):
    return {name: rng.normal(size=(batch, dim)).astype(np.float32) for name, dim in FEATURES}


def randomize(model, rng):
    """Weights far from their initial values (a zero bias would hide a missing bias)."""
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape).astype(np.float32))


def test_logistic_equals_the_starter_code(rng):
    model = build_video_level_classifier(config_model("logistic"), FEATURES, CLASSES)
    randomize(model, rng)
    x = inputs(rng)
    dense = model.get_layer("logistic")
    kernel, bias = (np.asarray(w, np.float64) for w in (dense.kernel, dense.bias))
    concat = np.concatenate([x["mean_rgb"], x["mean_audio"]], axis=1).astype(np.float64)
    got = np.asarray(model(x))
    np.testing.assert_allclose(got, starter_logistic(concat, kernel, bias), rtol=1e-5, atol=1e-6)
    # float32 rounding of a 9-term dot product and a sigmoid: far below 1e-5 relative.
    np.testing.assert_allclose(float(sum(model.losses)), starter_l2(kernel), rtol=1e-5)
    assert len(model.trainable_weights) == 2


@pytest.mark.parametrize("num_mixtures", [1, 2, 3])
def test_moe_equals_the_starter_code(rng, num_mixtures):
    model_cfg = config_model("moe")
    model_cfg.moe.num_mixtures = num_mixtures
    model = build_video_level_classifier(model_cfg, FEATURES, CLASSES)
    randomize(model, rng)
    x = inputs(rng)
    moe = model.get_layer("moe")
    gate = np.asarray(moe.gate_dense.kernel, np.float64)
    expert, expert_bias = (np.asarray(w, np.float64) for w in (moe.expert_dense.kernel, moe.expert_dense.bias))
    assert moe.gate_dense.bias is None  # the starter code's gates have no bias
    concat = np.concatenate([x["mean_rgb"], x["mean_audio"]], axis=1).astype(np.float64)
    want = starter_moe(concat, gate, expert, expert_bias, num_mixtures)
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(sum(model.losses)), starter_l2(gate, expert), rtol=1e-5)


def test_the_configs_hold_the_starter_defaults():
    moe, logistic = config_model("moe"), config_model("logistic")
    assert moe.head == "moe" and moe.moe.to_dict() == {"num_mixtures": 2, "l2_penalty": 5e-9}
    assert logistic.head == "logistic" and logistic.logistic.to_dict() == {"l2_penalty": 5e-9}
    assert moe.init_workdir == logistic.init_workdir == ""


@pytest.mark.parametrize("name", ["logistic", "moe"])
def test_keras_save_and_load_give_identical_outputs(rng, tmp_path, name):
    model = build_video_level_classifier(config_model(name), FEATURES, CLASSES)
    randomize(model, rng)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = inputs(rng)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize("name", ["logistic", "moe"])
def test_mixed_precision_returns_float32_probabilities(rng, name):
    with dtype_policy("mixed_bfloat16"):
        model = build_video_level_classifier(config_model(name), FEATURES, CLASSES)
    out = model(inputs(rng))
    assert out.dtype == "float32" and out.shape == (5, CLASSES)
    assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))


def test_bad_model_sections_are_one_line():
    bad = ml_collections.ConfigDict({"head": "svm", "init_workdir": ""})
    with pytest.raises(ConfigError, match=r"unknown video-level head model.head='svm'; expected one of: "
                                          r"logistic, moe"):
        build_video_level_classifier(bad, FEATURES, CLASSES)
    missing = ml_collections.ConfigDict({"head": "moe", "init_workdir": ""})
    with pytest.raises(ConfigError, match=r"model.moe is missing for model.head='moe'"):
        build_video_level_classifier(missing, FEATURES, CLASSES)
    negative = config_model("logistic")
    negative.logistic.l2_penalty = -1.0
    with pytest.raises(ConfigError, match=r"model.logistic.l2_penalty=-1.0: expected >= 0"):
        build_video_level_classifier(negative, FEATURES, CLASSES)
