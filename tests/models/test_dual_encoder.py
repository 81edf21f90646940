"""Tests of the video–text DualEncoder."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from vt_keras.errors import ConfigError, DataError
from vt_keras.models.dual_encoder import DualEncoder

VOCAB = ["crack", "the", "eggs", "whisk", "pan", "heat"]
CLIP_DIM = 6


def _model(**kwargs):
    args = dict(embedding_dim=8, clip_dim=CLIP_DIM, video_transformer_layers=1,
                token_embedding_dim=8, num_heads=2, max_tokens=5, dropout=0.1)
    args.update(kwargs)
    return DualEncoder(VOCAB, **args)


def _inputs(rng):
    num_clips = np.array([2, 4, 3])
    captions = np.array([["crack the eggs", "whisk", "", ""],
                         ["heat the pan", "eggs", "unknown words here", "pan"],
                         ["whisk the eggs", "crack", "", ""]], dtype=object)
    return {
        "clips": rng.normal(size=(3, 4, CLIP_DIM)).astype("float32"),
        "clip_mask": np.arange(4)[None, :] < num_clips[:, None],
        "captions": captions,
        "caption_mask": captions != "",
    }


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


@pytest.mark.parametrize("text_pooling", ["mean", "transformer"])
def test_shapes_masks_and_unit_norms(rng, text_pooling):
    inputs = _inputs(rng)
    out = _numpy(_model(text_pooling=text_pooling)(inputs))
    assert out["video_sequence"].shape == (3, 4, 8) and out["text_sequence"].shape == (3, 4, 8)
    assert out["video"].shape == (3, 8) and out["text"].shape == (3, 8)
    assert all(out[k].dtype == np.float32 for k in ("video", "text", "video_sequence"))
    np.testing.assert_array_equal(out["video_mask"], inputs["clip_mask"])
    np.testing.assert_array_equal(out["text_mask"], inputs["caption_mask"])
    np.testing.assert_allclose(np.linalg.norm(out["video"], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["text"], axis=-1), 1.0, atol=1e-5)
    for seq, mask in (("video_sequence", "video_mask"), ("text_sequence", "text_mask")):
        norms = np.linalg.norm(out[seq], axis=-1)
        np.testing.assert_allclose(norms[out[mask]], 1.0, atol=1e-5)
        np.testing.assert_array_equal(norms[~out[mask]], 0.0)


@pytest.mark.parametrize("text_pooling", ["mean", "transformer"])
def test_padding_never_changes_pooled_outputs(rng, text_pooling):
    model = _model(text_pooling=text_pooling, video_transformer_layers=2)
    inputs = _inputs(rng)
    reference = _numpy(model(inputs))
    garbage = {k: np.array(v, copy=True) for k, v in inputs.items()}
    garbage["clips"][~inputs["clip_mask"]] = np.nan
    garbage["clips"] = np.concatenate(  # extra padded clips full of huge values
        [garbage["clips"], np.full((3, 3, CLIP_DIM), 1e6, np.float32)], axis=1)
    garbage["clip_mask"] = np.concatenate([inputs["clip_mask"], np.zeros((3, 3), bool)], 1)
    garbage["captions"][~inputs["caption_mask"]] = "heat heat pan crack eggs"
    garbage["captions"] = np.concatenate(
        [garbage["captions"], np.full((3, 2), "whisk the pan", object)], axis=1)
    garbage["caption_mask"] = np.concatenate([inputs["caption_mask"], np.zeros((3, 2), bool)], 1)
    out = _numpy(model(garbage))
    for key in ("video", "text"):
        assert np.all(np.isfinite(out[key]))
        np.testing.assert_allclose(out[key], reference[key], atol=1e-5)
    valid = inputs["clip_mask"]
    np.testing.assert_allclose(out["video_sequence"][:, :4][valid],
                               reference["video_sequence"][valid], atol=1e-5)


def _dense(layer, x):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return x @ kernel + bias


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_values_match_a_float64_rederivation(rng):
    """Without Transformer layers both towers are dense maps and masked means."""
    model = _model(video_transformer_layers=0, text_pooling="mean")
    inputs = _inputs(rng)
    out = _numpy(model(inputs))
    ids = np.asarray(model.tokenizer(tf.constant(inputs["captions"].astype(str))))
    table = np.asarray(model.token_embedding.get_weights()[0], np.float64)
    for b in range(3):
        n = inputs["clip_mask"][b].sum()
        clips = inputs["clips"][b, :n].astype(np.float64)
        per_clip = _dense(model.video_output, _dense(model.clip_projection, clips))
        np.testing.assert_allclose(out["video_sequence"][b, :n], _unit(per_clip), atol=1e-5)
        np.testing.assert_allclose(out["video"][b], _unit(per_clip.mean(0)), atol=1e-5)
        captions = []
        for m in np.flatnonzero(inputs["caption_mask"][b]):
            tokens = ids[b, m][ids[b, m] > 0]
            captions.append(_dense(model.text_output, table[tokens].mean(0)))
        captions = np.stack(captions)
        np.testing.assert_allclose(out["text"][b], _unit(captions.mean(0)), atol=1e-5)


def test_serving_methods_in_tf_function_match_call(rng):
    model = _model(text_pooling="transformer")
    inputs = _inputs(rng)
    out = _numpy(model(inputs))

    embed_video = tf.function(model.embed_video, input_signature=[
        tf.TensorSpec([None, None, CLIP_DIM], tf.float32), tf.TensorSpec([None], tf.int32)])
    embed_text = tf.function(model.embed_text,
                             input_signature=[tf.TensorSpec([None], tf.string)])
    video = embed_video(inputs["clips"], np.array([2, 4, 3], np.int32)).numpy()
    np.testing.assert_allclose(video, out["video"], atol=1e-5)
    # One caption per query string equals the per-caption embedding.
    text = embed_text(tf.constant(["crack the eggs", "heat the pan", "pan"])).numpy()
    expected = out["text_sequence"][[0, 1, 1], [0, 0, 3]]
    np.testing.assert_allclose(text, expected, atol=1e-5)


def test_keras_save_and_load_give_identical_outputs(rng, tmp_path):
    model = _model(text_pooling="transformer", num_oov_buckets=3)
    inputs = _inputs(rng)
    expected = _numpy(model(inputs))
    config = model.get_config()
    assert config["vocabulary"] == VOCAB and config["text_pooling"] == "transformer"
    assert config["num_oov_buckets"] == 3 and config["clip_dim"] == CLIP_DIM
    path = str(tmp_path / "dual.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, DualEncoder)
    out = _numpy(loaded(inputs))
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])


def test_saved_model_export_has_string_and_bool_inputs(rng, tmp_path):
    model = _model(text_pooling="mean", video_transformer_layers=0)
    inputs = _inputs(rng)
    expected = _numpy(model(inputs))
    # Keras alone would guess float32 captions; DualEncoder.export passes
    # input_signature(), and the tokenizer's table goes into the SavedModel.
    model.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    out = served.serve(inputs)
    for key in ("video", "text", "text_sequence"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-6)


def test_mixed_precision_outputs_stay_float32_unit_norm(rng):
    keras.config.set_dtype_policy("mixed_float16")
    out = _numpy(_model(text_pooling="transformer")(_inputs(rng)))
    for key in ("video", "text"):
        assert out[key].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out[key], axis=-1), 1.0, atol=1e-3)


def test_user_mistakes_raise_clear_errors(rng):
    with pytest.raises(ConfigError, match="text_pooling"):
        _model(text_pooling="max")
    inputs = _inputs(rng)
    with pytest.raises(ConfigError, match="clip_dim=7 features, found 6"):
        _model(clip_dim=7)(inputs)
    with pytest.raises(DataError, match=r"missing \['captions'\]"):
        _model()({k: v for k, v in inputs.items() if k != "captions"})
    with pytest.raises(ConfigError, match="num_heads"):
        _model(embedding_dim=9, num_heads=2)(inputs)


@pytest.mark.slow
def test_learns_retrieval_on_synthetic_data(tmp_path):
    from vt_keras.data.video_text import read_captions, video_text_dataset
    from vt_keras.data.video_text_synthetic import make_video_text_data
    from vt_keras.losses.contrastive import info_nce
    from vt_keras.metrics.retrieval import retrieval_metrics
    from vt_keras.text import build_vocabulary

    data = str(tmp_path / "data")
    make_video_text_data(data, num_videos=400, clip_dim=16, splits=(0.8, 0.0, 0.2))
    vocab = build_vocabulary(read_captions(data + "/train-*"))
    model = DualEncoder(vocab, embedding_dim=32, clip_dim=16, token_embedding_dim=32,
                        num_heads=2, max_tokens=8, dropout=0.0)
    optimizer = keras.optimizers.Adam(2e-3)
    train = video_text_dataset(data + "/train-*", 32, clip_dim=16, max_clips=12, shuffle=True,
                               repeat=True, drop_remainder=True, seed=0)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
            loss = info_nce(out["video"], out["text"], temperature=0.05)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for batch in train.take(200):
        step(batch)
    test = next(iter(video_text_dataset(data + "/test-*", 100, clip_dim=16, max_clips=12)))
    out = model(test)
    metrics = retrieval_metrics(np.asarray(out["text"]), np.asarray(out["video"]))
    # 80 test videos: chance is 1.25 %; this run measured about 20 % both ways
    # (about 60 % with the default 1200 videos and 300 steps of batch 64).
    assert metrics["t2v/R@1"] > 10.0 and metrics["v2t/R@1"] > 10.0
