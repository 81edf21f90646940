"""Serving export: signatures, a fresh TensorFlow-only process, saved_model_cli, TF Serving requests."""
import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.yt8m_fixtures import TINY_CLASSES, TINY_FEATURES, TINY_FRAMES, tiny_config, write_tiny_yt8m
from vt_keras.data.checks import data_error_message
from vt_keras.tasks.yt8m import YT8MClassification

FRESH_PROCESS = r"""
import sys, json
import numpy as np
import tensorflow as tf
export_dir, records_file, out = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
records = [r.numpy() for r in tf.data.TFRecordDataset(records_file)]
serve = loaded.signatures["serving_default"](example_bytes=tf.constant(records))
rgb = np.load(out + ".in.npz")
dense = loaded.signatures["predict_features"](rgb=tf.constant(rgb["rgb"]), audio=tf.constant(rgb["audio"]),
                                             num_frames=tf.constant(rgb["num_frames"]))
assert not any(m.startswith("vt_keras") for m in sys.modules), "the export needs vt_keras"
np.savez(out, ids=serve["video_id"].numpy().astype("S"), idx=serve["class_indexes"].numpy(),
         scores=serve["predictions"].numpy(), dense_idx=dense["class_indexes"].numpy(),
         dense_scores=dense["scores"].numpy())
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    pattern = write_tiny_yt8m(str(root / "data"), num_videos=12, num_files=1)
    config = tiny_config(pattern)
    task = YT8MClassification(config)
    model = task.build_model()
    export_dir = str(root / "export")
    task.export(model, export_dir)
    return task, model, pattern, export_dir


def in_process(task, model, pattern):
    ids, probs = [], []
    for batch_ids, batch_probs, _ in task.predict(model, pattern, batch_size=5):
        ids.extend(batch_ids)
        probs.append(batch_probs)
    return np.array(ids), np.concatenate(probs)


def test_fresh_tensorflow_only_process_gives_in_process_predictions(exported, tmp_path):
    task, model, pattern, export_dir = exported
    ids, probs = in_process(task, model, pattern)
    records_file = tf.io.gfile.glob(pattern)[0]
    rng = np.random.default_rng(0)
    dense = {"rgb": rng.normal(size=(3, 9, 8)).astype(np.float32),
             "audio": rng.normal(size=(3, 9, 4)).astype(np.float32),
             "num_frames": np.array([2, 6, 9], np.int32)}
    out = str(tmp_path / "fresh")
    np.savez(out + ".in.npz", **dense)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, export_dir, records_file, out],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out + ".npz")
    np.testing.assert_array_equal(got["ids"], ids.astype("S"))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :TINY_CLASSES]
    np.testing.assert_array_equal(got["idx"], top)
    np.testing.assert_allclose(got["scores"], np.take_along_axis(probs, top, 1), rtol=1e-5, atol=1e-6)
    assert got["idx"].dtype == np.int32 and got["scores"].dtype == np.float32
    # Dense path: truncation of 9 frames to max_frames and masking by num_frames.
    frames = {k: v[:, :TINY_FRAMES] for k, v in dense.items() if k != "num_frames"}
    mask = np.arange(TINY_FRAMES)[None] < np.minimum(dense["num_frames"], TINY_FRAMES)[:, None]
    expected = np.asarray(model({**frames, "mask": mask}, training=False))
    np.testing.assert_allclose(got["dense_scores"], expected, rtol=1e-5, atol=1e-6)


def test_signatures_follow_the_starter_exporter_contract(exported):
    export_dir = exported[3]
    loaded = tf.saved_model.load(export_dir)
    serving = loaded.signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    assert set(inputs) == {"example_bytes"}
    assert inputs["example_bytes"].dtype == tf.string and inputs["example_bytes"].shape.as_list() == [None]
    outputs = serving.structured_outputs
    assert set(outputs) == {"video_id", "class_indexes", "predictions"}
    assert outputs["class_indexes"].dtype == tf.int32 and outputs["predictions"].dtype == tf.float32
    assert outputs["class_indexes"].shape.as_list() == [None, TINY_CLASSES]  # top 20 capped at C
    _, dense_inputs = loaded.signatures["predict_features"].structured_input_signature
    assert {k: v.dtype for k, v in dense_inputs.items()} == {"rgb": tf.float32, "audio": tf.float32,
                                                            "num_frames": tf.int32}


def test_saved_model_cli_shows_and_runs_the_export(exported, tmp_path):
    export_dir = exported[3]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    shown = subprocess.run(["saved_model_cli", "show", "--dir", export_dir, "--all"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in ("serving_default", "example_bytes", "video_id", "class_indexes", "predictions",
                 "predict_features", "num_frames"):
        assert name in shown.stdout
    feeds = {"rgb": np.zeros((2, 4, TINY_FEATURES[0][1]), np.float32),
             "audio": np.zeros((2, 4, TINY_FEATURES[1][1]), np.float32), "num_frames": np.array([4, 1], np.int32)}
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
    inputs = ";".join(f"{name}={tmp_path / (name + '.npy')}" for name in feeds)
    ran = subprocess.run(["saved_model_cli", "run", "--dir", export_dir, "--tag_set", "serve", "--signature_def",
                          "predict_features", "--inputs", inputs], capture_output=True, text=True, env=env,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "class_indexes" in ran.stdout and "scores" in ran.stdout


def test_tf_serving_grpc_and_rest_requests_address_the_real_inputs(exported):
    from tensorflow_serving.apis import predict_pb2

    task, model, pattern, export_dir = exported
    loaded = tf.saved_model.load(export_dir)
    records = [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)[0]).take(3)]
    requests = {
        "serving_default": {"example_bytes": np.array(records, dtype=object)},
        "predict_features": {"rgb": np.zeros((1, 3, 8), np.float32), "audio": np.ones((1, 3, 4), np.float32),
                             "num_frames": np.array([3], np.int32)},
    }
    for signature, feeds in requests.items():
        _, spec = loaded.signatures[signature].structured_input_signature
        grpc = predict_pb2.PredictRequest()
        grpc.model_spec.name = "vt_keras"
        grpc.model_spec.signature_name = signature
        for name, value in feeds.items():
            grpc.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=spec[name].dtype))
        assert set(grpc.inputs) == set(spec)
        for name, tensor in grpc.inputs.items():
            assert tensor.dtype == spec[name].dtype.as_datatype_enum
        decoded = {k: tf.make_ndarray(v) for k, v in grpc.inputs.items()}
        via_grpc = loaded.signatures[signature](**{k: tf.constant(v) for k, v in decoded.items()})

        # REST: the columnar "inputs" form; bytes go as {"b64": ...}.
        body = {"signature_name": signature, "inputs": {
            k: ([{"b64": base64.b64encode(x).decode()} for x in v] if v.dtype == object else v.tolist())
            for k, v in feeds.items()}}
        body = json.loads(json.dumps(body))
        assert set(body["inputs"]) == set(spec)
        rest_feed = {}
        for k, v in body["inputs"].items():
            if spec[k].dtype == tf.string:
                rest_feed[k] = tf.constant([base64.b64decode(x["b64"]) for x in v])
            else:
                rest_feed[k] = tf.constant(v, dtype=spec[k].dtype)
        via_rest = loaded.signatures[signature](**rest_feed)
        for key in via_grpc:
            np.testing.assert_array_equal(via_grpc[key].numpy(), via_rest[key].numpy())


# --- serving needs no labels; records it cannot serve say why (a fresh TensorFlow-only process) ---

SERVE_VARIANTS = r"""
import sys, json
import tensorflow as tf
export_dir, out = sys.argv[1:3]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
results = {}
for path in sys.argv[3:]:
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    try:
        got = serve(example_bytes=tf.constant(records))
        results[path] = {"ids": [v.decode() for v in got["video_id"].numpy()],
                         "idx": got["class_indexes"].numpy().tolist(), "scores": got["predictions"].numpy().tolist()}
    except tf.errors.InvalidArgumentError as e:
        results[path] = {"error": e.message}
assert not any(m.startswith("vt_keras") for m in sys.modules), "the export needs vt_keras"
json.dump(results, open(out, "w"))
"""


def serve_in_fresh_process(export_dir, paths, tmp_path):
    out = str(tmp_path / "served.json")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SERVE_VARIANTS, export_dir, out, *paths], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def _frames(seed, frames=4):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1.5, 1.5, (frames, dim)) for name, dim in TINY_FEATURES}


def test_serving_ignores_labels_and_reads_2017_ids(exported, tmp_path):
    from vt_keras.data import yt8m

    export_dir = exported[3]
    variants = {"in_range": ([1, 3], "id"), "beyond_num_classes": ([TINY_CLASSES, 4000], "id"),
                "empty": ([], "id"), "no_key": (None, "id"), "release_2017": ([2], "video_id")}
    paths = []
    for name, (labels, id_key) in variants.items():
        examples = [yt8m.make_frame_example(f"v{i}", labels or [], _frames(i), id_key=id_key) for i in range(3)]
        if labels is None:
            for example in examples:
                del example.context.feature["labels"]
        path = str(tmp_path / f"{name}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for example in examples:
                writer.write(example.SerializeToString())
        paths.append(path)
    served = serve_in_fresh_process(export_dir, paths, tmp_path)
    reference = served[paths[0]]
    assert "error" not in reference and reference["ids"] == ["v0", "v1", "v2"]
    for path in paths[1:]:
        assert served[path] == reference, path  # the same features give the same output, whatever the labels


def test_a_wrong_feature_size_fails_with_the_parsers_line(exported, tmp_path):
    from vt_keras.data import yt8m

    features = _frames(0)
    features["rgb"] = features["rgb"][:, :7]
    path = str(tmp_path / "wrong.tfrecord")
    yt8m.write_frame_records(path, [{"id": "ok", "labels": [], **_frames(1)}, {"id": "bad", "labels": [], **features}])
    served = serve_in_fresh_process(exported[3], [path], tmp_path)
    # The marked line inside TensorFlow's error, as bin/predict extracts it.
    assert data_error_message(served[path]["error"]) == "record 'bad': feature list 'rgb' expected 8 bytes per " \
                                                        "frame, found 7"


@pytest.fixture(scope="module")
def video_exported(tmp_path_factory):
    import keras

    from vt_keras.export import export_video_classifier

    features = (("mean_rgb", 8), ("mean_audio", 4))
    inputs = {name: keras.Input((dim,), name=name) for name, dim in features}
    probs = keras.layers.Dense(TINY_CLASSES, activation="sigmoid")(keras.layers.Concatenate()(list(inputs.values())))
    model = keras.Model(inputs, probs)
    export_dir = str(tmp_path_factory.mktemp("video_export") / "1")
    export_video_classifier(model, export_dir, features, num_classes=TINY_CLASSES, top_k=3, l2_normalize=True)
    return model, features, export_dir


def test_video_level_export_serves_video_level_records(video_exported, tmp_path):
    from vt_keras.data import yt8m

    model, features, export_dir = video_exported
    rng = np.random.default_rng(3)
    examples = [{"id": f"w{i}", "labels": [7000] if i else [], "mean_rgb": rng.normal(size=8),
                 "mean_audio": rng.normal(size=4)} for i in range(4)]
    path = str(tmp_path / "video.tfrecord")
    yt8m.write_video_records(path, examples, id_key="video_id")  # 2017-style ids, labels beyond num_classes
    frame_path = str(tmp_path / "frames.tfrecord")
    yt8m.write_frame_records(frame_path, [{"id": "f", "labels": [], **_frames(0)}])
    served = serve_in_fresh_process(export_dir, [path, frame_path], tmp_path)
    assert served[path]["ids"] == ["w0", "w1", "w2", "w3"]
    # The model in process, on float64 L2-normalised inputs (the export's l2_normalize=True).
    x = np.concatenate([[e["mean_rgb"] for e in examples], [e["mean_audio"] for e in examples]], axis=1)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    probs = np.asarray(model({"mean_rgb": x[:, :8].astype(np.float32), "mean_audio": x[:, 8:].astype(np.float32)}))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(served[path]["idx"], top)
    np.testing.assert_allclose(served[path]["scores"], np.take_along_axis(probs, top, 1), rtol=1e-5, atol=1e-6)
    # A frame-level record: the parser says what it found.
    message = data_error_message(served[frame_path]["error"])
    assert message.startswith("record 'f': feature 'mean_rgb' expected 8 floats, found 0; the record has context keys")
    assert message.endswith("(a frame-level tf.train.SequenceExample)")
    loaded = tf.saved_model.load(export_dir)
    _, inputs = loaded.signatures["predict_features"].structured_input_signature
    assert {k: v.shape.as_list() for k, v in inputs.items()} == {"mean_rgb": [None, 8], "mean_audio": [None, 4]}
