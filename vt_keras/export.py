"""SavedModel export with the serving signatures TF Serving clients expect.

Classifier exports follow the YouTube-8M starter code's exporter contract, so
existing clients keep working:

- `serving_default(example_bytes: string [N])` → `video_id` (string `[N]`),
  `class_indexes` (int32 `[N, k]`), `predictions` (float32 `[N, k]`): the
  top-k classes by score (k = 20 unless the export config says otherwise),
  from serialized frame-level `tf.train.SequenceExample`s parsed in the graph.
- `predict_features(<feature>: float32 [N, T, dim] ..., num_frames: int32 [N])`
  → `class_indexes`, `predictions` and the full `scores` (float32
  `[N, num_classes]`), for clients that send dense features. Any T works:
  frames are truncated or zero-padded to the model's `max_frames`.

The export loads in a process that imports only TensorFlow
(`tf.saved_model.load(path).signatures[...]`) and with `saved_model_cli`.
"""
import keras
import tensorflow as tf


def _pad_or_truncate(x, max_frames):
    x = x[:, :max_frames]
    pad = max_frames - tf.shape(x)[1]
    return tf.pad(x, [[0, 0], [0, pad], [0, 0]])


def _top_k_outputs(probs, top_k):
    probs = tf.cast(probs, tf.float32)
    scores, indexes = tf.math.top_k(probs, k=top_k)
    return {"class_indexes": tf.cast(indexes, tf.int32), "predictions": scores}


def export_classifier(model, export_dir, features, max_frames, num_classes, top_k=20, l2_normalize=False):
    """Writes `model` (a YouTube-8M classifier) to `export_dir` as a SavedModel.

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

    Returns:
        `export_dir`.
    """
    from vt_keras.data import yt8m

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
                                          num_classes=num_classes)
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
