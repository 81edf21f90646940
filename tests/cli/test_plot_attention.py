"""bin/plot_attention: the weights it draws, the PNG it writes, its one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.yt8m_fixtures import TINY_FRAMES, tiny_config, variant_config_file, write_tiny_yt8m
from vt_keras.cli.plot_attention import attention_maps, plot_attention
from vt_keras.errors import ConfigError
from vt_keras.models.video_classifier import build_video_classifier
from vt_keras import tasks

FEATURES = (("rgb", 8), ("audio", 4))


def quiet(*args):
    del args


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_yt8m(str(tmp_path_factory.mktemp("tiny")), num_videos=16, num_files=1)


def make_workdir(directory, config):
    """A workdir as `bin/train` leaves it (config.json, a checkpoint), after one eager training step."""
    import keras

    from vt_keras.train import checkpoints
    from vt_keras.train.task import StepContext

    task = tasks.build_task(config)
    model = task.build_model()
    optimizer = keras.optimizers.Adam(1e-2)
    batch = next(iter(task.dataset(config.data.train_pattern, 8)))
    ctx = StepContext(global_batch_size=8, num_replicas=1, gather=lambda x, axis=0: x, step=optimizer.iterations)
    with tf.GradientTape() as tape:
        loss, _ = task.loss_fn(model, batch, ctx)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    checkpoints.save_config(config, directory)
    checkpoints.CheckpointKeeper(directory, model=model).save(1)
    return directory


@pytest.fixture(scope="module")
def workdirs(tiny_data, tmp_path_factory):
    """Tiny trained models: attention clusters (CM-G), NetVLAD (late), Transformer (CM-C)."""
    root = tmp_path_factory.mktemp("runs")
    return {name: make_workdir(str(root / name), tiny_config(tiny_data, config_file=variant_config_file(name)))
            for name in ("rnn_cm_gated", "netvlad_late", "transformer_cm_concat")}


def inputs(rng, lengths=(6, 3)):
    mask = np.arange(TINY_FRAMES)[None, :] < np.array(lengths)[:, None]
    return {"rgb": (rng.normal(size=(len(lengths), TINY_FRAMES, 8)) * mask[..., None]).astype("f"),
            "audio": (rng.normal(size=(len(lengths), TINY_FRAMES, 4)) * mask[..., None]).astype("f"), "mask": mask}


def model_config(aggregator, fusion):
    config = tiny_config("unused", config_file=variant_config_file(f"{aggregator}_{fusion}"))
    return config.model


@pytest.mark.parametrize("aggregator", ["rnn", "netvlad", "transformer"])
@pytest.mark.parametrize("fusion", ["early", "late", "cm_gated", "cm_concat"])
def test_weights_are_zero_on_padding_and_normalised_where_the_aggregator_normalises(aggregator, fusion, rng):
    cfg = model_config(aggregator, fusion)
    model = build_video_classifier(cfg, FEATURES, 5, TINY_FRAMES)
    x = inputs(rng)
    streams, correlation = attention_maps(model, cfg, FEATURES, x)
    assert [n for n, _ in streams] == (["rgb+audio"] if fusion == "early" else ["rgb", "audio"])
    assert (correlation is not None) == fusion.startswith("cm_")
    valid = x["mask"][:, None, :]
    for _, w in streams:
        assert w.shape[0] == 2 and w.shape[2] == TINY_FRAMES and np.all(np.isfinite(w))
        np.testing.assert_array_equal(w * ~valid, 0.0)
        if fusion in ("early", "late"):
            if aggregator == "netvlad":  # soft assignment: a distribution over clusters per valid frame
                np.testing.assert_allclose(w.sum(axis=1), x["mask"].astype(float), atol=1e-5)
            else:  # attention: a distribution over valid frames per unit (head)
                np.testing.assert_allclose(w.sum(axis=2), 1.0, atol=1e-5)
        else:  # the cross-modal term only adds weight
            assert np.all(w >= -1e-7)


def test_attention_cluster_weights_match_a_numpy_softmax(rng):
    cfg = model_config("rnn", "late")
    model = build_video_classifier(cfg, FEATURES, 5, TINY_FRAMES)
    x = inputs(rng)
    streams, _ = attention_maps(model, cfg, FEATURES, x)
    for name, w in streams:
        kernel = np.asarray(model.get_layer(f"{name}_aggregator").score_dense.kernel, np.float64)
        scores = np.einsum("btd,dk->bkt", x[name].astype(np.float64), kernel)
        scores = np.where(x["mask"][:, None, :], scores, -np.inf)
        expected = np.exp(scores - scores.max(axis=2, keepdims=True))
        expected /= expected.sum(axis=2, keepdims=True)
        np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)


def test_pooling_models_have_no_attention_to_plot(rng):
    cfg = model_config("pool", "late")
    model = build_video_classifier(cfg, FEATURES, 5, TINY_FRAMES)
    with pytest.raises(ConfigError, match=r"model.aggregator='pool' has no attention weights"):
        attention_maps(model, cfg, FEATURES, inputs(rng))


@pytest.mark.parametrize("name", ["rnn_cm_gated", "netvlad_late", "transformer_cm_concat"])
def test_writes_a_png_of_one_video_without_its_padding(name, workdirs, tiny_data, tmp_path):
    import matplotlib.image

    output = str(tmp_path / "attention.png")
    video_id = "train0005"
    drawn = plot_attention(workdirs[name], tiny_data, output, video_id=video_id)
    with open(output, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(output).shape
    assert width > 500 and height > 300
    assert drawn["video_id"] == video_id
    batch = next(iter(tasks.build_task(tiny_config(tiny_data)).dataset(tiny_data, 16)))
    frames = int(batch["num_frames"].numpy()[[x.decode() for x in batch["id"].numpy()].index(video_id)])
    assert drawn["num_frames"] == frames
    assert all(w.shape[1] == frames for w in drawn["streams"].values())
    assert (drawn["correlation"] is not None) == ("_cm_" in name)


def test_the_default_video_is_the_first_of_the_data(tiny_data):
    from vt_keras.cli.plot_attention import find_video

    video = find_video(tasks.build_task(tiny_config(tiny_data)), tiny_data)
    assert video["id"].tolist() == [b"train0000"] and video["rgb"].shape == (1, TINY_FRAMES, 8)


@pytest.mark.slow  # a fresh process imports TensorFlow and restores the model
def test_unknown_video_id_is_a_one_line_error(workdirs, tiny_data, tmp_path):
    output = str(tmp_path / "x.png")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "bin", "plot_attention"), f"--workdir={workdirs['netvlad_late']}",
         f"--data={tiny_data}", "--video_id=nope", f"--output={output}"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --video_id=nope is not among the 16 videos of --data={tiny_data}"]
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(output)
