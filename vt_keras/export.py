"""SavedModel export with the serving signatures TF Serving clients expect.

Classifier exports follow the YouTube-8M starter code's exporter contract, so
existing clients keep working. Frame-level classifiers (`export_classifier`):

- `serving_default(example_bytes: string [N])` → `video_id` (string `[N]`),
  `class_indexes` (int32 `[N, k]`), `predictions` (float32 `[N, k]`): the
  top-k classes by score (k = 20 unless the export config says otherwise),
  from serialized frame-level `tf.train.SequenceExample`s parsed in the graph.
- `predict_features(<feature>: float32 [N, T, dim] ..., num_frames: int32 [N])`
  → `class_indexes`, `predictions` and the full `scores` (float32
  `[N, num_classes]`), for clients that send dense features. Any T works:
  frames are truncated or zero-padded to the model's `max_frames`
  (`bin/predict --segments` sends 5-frame segments this way).

Video-level classifiers (`export_video_classifier`): the same
`serving_default` from serialized video-level `tf.train.Example`s (`mean_rgb`,
`mean_audio`), and `predict_features(<feature>: float32 [N, dim] ...)`.

Serving reads the id and the features only: a record's labels (any values,
an empty list, or no `labels` key) never matter. The id is the 2018+
releases' `id` or the 2017 release's `video_id`, whichever the record has
(`id_key="auto"`). A record that cannot be served (a missing feature, a
feature of the wrong size, no id) fails with the parser's marked one-line
message, which `vt_keras.data.checks.data_error_message` extracts from the
error (`bin/predict` prints it with the file).

The export loads in a process that imports only TensorFlow
(`tf.saved_model.load(path).signatures[...]`) and with `saved_model_cli`.
"""
import keras
import tensorflow as tf

from vt_keras.data import yt8m


def _pad_or_truncate(x, max_frames):
    x = x[:, :max_frames]
    pad = max_frames - tf.shape(x)[1]
    return tf.pad(x, [[0, 0], [0, pad], [0, 0]])


def _top_k_outputs(probs, top_k):
    probs = tf.cast(probs, tf.float32)
    scores, indexes = tf.math.top_k(probs, k=top_k)
    return {"class_indexes": tf.cast(indexes, tf.int32), "predictions": scores}


def export_classifier(model, export_dir, features, max_frames, num_classes, top_k=20, l2_normalize=False,
                      id_key="auto"):
    """Writes `model` (a frame-level YouTube-8M classifier) to `export_dir` as a SavedModel.

    Args:
        model: a model taking `{feature: [B, T, dim], "mask": [B, T]}` and
            returning probabilities `[B, num_classes]`.
        export_dir: destination directory.
        features: `(name, dim)` pairs, in the model's order.
        max_frames: the model's T.
        num_classes: output classes.
        top_k: how many classes the signatures return (capped at num_classes).
        l2_normalize: whether training normalised each frame's concatenated
            features (then serving does too).
        id_key: the records' id key ("auto": `id` or the 2017 `video_id`).

    Returns:
        `export_dir`.

    Example:
        >>> export_classifier(model, "exports/nv/1", (("rgb", 1024), ("audio", 128)), 300, 3862)
    """
    top_k = min(int(top_k), int(num_classes))
    names = [name for name, _ in features]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def run_model(frames, num_frames):
        mask = tf.sequence_mask(num_frames, max_frames)
        if l2_normalize:
            frames = yt8m.l2_normalize_concat(frames)  # the same normalisation as training
        inputs = dict(zip(names, frames))
        inputs["mask"] = mask
        return model(inputs, training=False)

    def serving_default(example_bytes):
        parsed = yt8m.parse_frame_example(example_bytes, features=features, max_frames=max_frames,
                                          num_classes=num_classes, id_key=id_key, labels_key=None,
                                          count_problems=False)
        probs = run_model([parsed[n] for n in names], parsed["num_frames"])
        outputs = _top_k_outputs(probs, top_k)
        outputs["video_id"] = parsed["id"]
        return outputs

    archive.add_endpoint("serving_default", serving_default,
                         input_signature=[tf.TensorSpec([None], tf.string, name="example_bytes")])

    def predict_features(*args):
        *frames, num_frames = args
        num_frames = tf.minimum(tf.cast(num_frames, tf.int32), max_frames)
        frames = [_pad_or_truncate(tf.cast(f, tf.float32), max_frames) for f in frames]
        probs = run_model(frames, num_frames)
        outputs = _top_k_outputs(probs, top_k)
        outputs["scores"] = tf.cast(probs, tf.float32)
        return outputs

    signature = [tf.TensorSpec([None, None, dim], tf.float32, name=name) for name, dim in features]
    signature.append(tf.TensorSpec([None], tf.int32, name="num_frames"))
    # With *args, TensorFlow names the signature's inputs after the specs.
    archive.add_endpoint("predict_features", predict_features, input_signature=signature)
    archive.write_out(export_dir, verbose=False)
    return export_dir


def export_video_classifier(model, export_dir, features=yt8m.VIDEO_FEATURES, num_classes=3862, top_k=20,
                            l2_normalize=False, id_key="auto"):
    """Writes `model` (a video-level YouTube-8M classifier) to `export_dir` as a SavedModel.

    Signatures: `serving_default(example_bytes: string [N])` on serialized
    video-level `tf.train.Example`s → `video_id`, `class_indexes` (int32
    `[N, k]`), `predictions` (float32 `[N, k]`), the starter code's exporter
    contract; and `predict_features(<feature>: float32 [N, dim] ...)` → the
    same top k and the full `scores` (float32 `[N, num_classes]`).

    Args:
        model: a model taking `{feature: float [B, dim]}` (e.g. `mean_rgb`,
            `mean_audio`) and returning probabilities `[B, num_classes]`.
        export_dir: destination directory.
        features: `(name, dim)` pairs, in the model's order.
        num_classes: output classes.
        top_k: how many classes the signatures return (capped at num_classes).
        l2_normalize: whether training normalised the concatenated features
            of each video (then serving does too).
        id_key: the records' id key ("auto": `id` or the 2017 `video_id`).

    Returns:
        `export_dir`.

    Example:
        >>> export_video_classifier(model, "exports/moe/1", (("mean_rgb", 1024), ("mean_audio", 128)), 3862)
    """
    features = tuple((str(n), int(d)) for n, d in features)
    top_k = min(int(top_k), int(num_classes))
    names = [name for name, _ in features]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def run_model(values):
        if l2_normalize:
            values = yt8m.l2_normalize_concat(values)  # the same normalisation as training
        return model(dict(zip(names, values)), training=False)

    def serving_default(example_bytes):
        parsed = yt8m.parse_video_example(example_bytes, features=features, num_classes=num_classes,
                                          id_key=id_key, labels_key=None)
        outputs = _top_k_outputs(run_model([parsed[n] for n in names]), top_k)
        outputs["video_id"] = parsed["id"]
        return outputs

    archive.add_endpoint("serving_default", serving_default,
                         input_signature=[tf.TensorSpec([None], tf.string, name="example_bytes")])

    def predict_features(*values):
        probs = run_model([tf.cast(v, tf.float32) for v in values])
        outputs = _top_k_outputs(probs, top_k)
        outputs["scores"] = tf.cast(probs, tf.float32)
        return outputs

    signature = [tf.TensorSpec([None, dim], tf.float32, name=name) for name, dim in features]
    archive.add_endpoint("predict_features", predict_features, input_signature=signature)
    archive.write_out(export_dir, verbose=False)
    return export_dir
