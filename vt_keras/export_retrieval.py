"""SavedModel export of a video–text `DualEncoder` for search and serving.

Signatures (all embeddings float32 and L2-normalised, so dot products are
cosine similarities):

- `embed_text(strings: string [N])` → `embedding [N, E]`: one raw query or
  caption per string, tokenized in the graph with the training vocabulary.
  This is also `serving_default`.
- `embed_video(clips: float32 [N, C, D], num_clips: int32 [N])` →
  `embedding [N, E]`: the pooled video embedding of the first `num_clips`
  clips of each row; clips beyond the trained `max_clips` are dropped, as in
  training.
- `similarity(strings [Nt], clips [Nv, C, D], num_clips [Nv])` →
  `similarity [Nt, Nv]`: every text against every video.
- `model_info()` → `clip_dim`, `max_clips`, `embedding_dim` (int32 scalars),
  for clients such as `bin/search` that read records themselves.

The text signatures run tensorflow-text ops, so a process that loads the
export must `import tensorflow_text` first (TensorFlow alone fails with "Op
type not registered 'CaseFoldUTF8'"):

```python
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
loaded = tf.saved_model.load("exports/retrieval/1")
query = loaded.signatures["embed_text"](strings=tf.constant(["crack the eggs"]))["embedding"]
```
"""
import keras
import tensorflow as tf


def export_dual_encoder(model, export_dir, max_clips):
    """Writes a trained `DualEncoder` to `export_dir` with the signatures above.

    Args:
        model: a built `vt_keras.models.dual_encoder.DualEncoder`.
        export_dir: destination directory (for TF Serving, a numbered version
            directory such as `exports/retrieval/1`).
        max_clips: the clips per video the model was trained on.

    Returns:
        `export_dir`.
    """
    max_clips = int(max_clips)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The vocabulary lives in a lookup table, not a variable: track it explicitly.
    archive.track(model.tokenizer.lookup_table)

    def text_embedding(strings):
        return tf.cast(model.embed_text(strings), tf.float32)

    def video_embedding(clips, num_clips):
        clips = tf.cast(clips, model.compute_dtype)[:, :max_clips]
        num_clips = tf.clip_by_value(tf.cast(num_clips, tf.int32), 0, tf.shape(clips)[1])
        return tf.cast(model.embed_video(clips, num_clips), tf.float32)

    strings_spec = tf.TensorSpec([None], tf.string, name="strings")
    clips_spec = tf.TensorSpec([None, None, model.clip_dim], tf.float32, name="clips")
    num_clips_spec = tf.TensorSpec([None], tf.int32, name="num_clips")

    def embed_text(strings):
        return {"embedding": text_embedding(strings)}

    def embed_video(clips, num_clips):
        return {"embedding": video_embedding(clips, num_clips)}

    def similarity(strings, clips, num_clips):
        scores = tf.matmul(text_embedding(strings), video_embedding(clips, num_clips), transpose_b=True)
        return {"similarity": scores}

    def model_info():
        return {"clip_dim": tf.constant(model.clip_dim, tf.int32),
                "max_clips": tf.constant(max_clips, tf.int32),
                "embedding_dim": tf.constant(model.embedding_dim, tf.int32)}

    # The first endpoint becomes serving_default.
    archive.add_endpoint("embed_text", embed_text, input_signature=[strings_spec])
    archive.add_endpoint("embed_video", embed_video, input_signature=[clips_spec, num_clips_spec])
    archive.add_endpoint("similarity", similarity, input_signature=[strings_spec, clips_spec, num_clips_spec])
    archive.add_endpoint("model_info", model_info, input_signature=[])
    archive.write_out(export_dir, verbose=False)
    return export_dir
