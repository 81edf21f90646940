r"""bin/search: the videos of some records that best match a text query, ranked by an export.

    bin/search --export_dir=workdirs/info_nce/export --data='data/test-*.tfrecord' \
        --query "crack the eggs" --top_k=5

Needs only a retrieval SavedModel (written by `bin/train` or `bin/export` for a
`retrieval` config) and video–text records (docs/video_text_format.md): the
query goes through the export's `embed_text`, every video through
`embed_video` (clip size and clips per video from its `model_info`), and the
videos are ranked by cosine similarity. Prints, best first, each video's id,
its score and the captions stored with it.
"""
import sys

import numpy as np
from absl import flags

from vt_keras.cli import common
from vt_keras.errors import ConfigError, DataError

FLAGS = flags.FLAGS
SIGNATURES = ("embed_text", "embed_video", "model_info")


def define_flags():
    flags.DEFINE_string("export_dir", None, "A retrieval SavedModel written by bin/train or bin/export.")
    flags.DEFINE_string("data", None, "File pattern of video-text records (comma-separated allowed).")
    flags.DEFINE_string("query", None, "The text to search for, e.g. --query \"crack the eggs\".")
    flags.DEFINE_integer("top_k", 5, "How many videos to print.")
    flags.DEFINE_integer("batch_size", 256, "Videos per call of embed_video.")
    flags.DEFINE_enum("clip_encoding", "auto", ["auto", "float", "quantized"],
                      "How the records store clips; auto: read from the first record.")
    flags.mark_flags_as_required(["export_dir", "data", "query"])


def load_export(export_dir):
    """The loaded SavedModel, checked for the retrieval signatures."""
    # TensorFlow is imported where it is used, so that --help and flag errors answer at once.
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the ops of the export's tokenizer)

    try:
        loaded = tf.saved_model.load(export_dir)
    except (OSError, ValueError, tf.errors.NotFoundError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"--export_dir={export_dir}: not a SavedModel ({first})") from e
    missing = [s for s in SIGNATURES if s not in loaded.signatures]
    if missing:
        raise DataError(f"--export_dir={export_dir}: expected a retrieval export with signatures "
                        f"{list(SIGNATURES)}; missing {missing} (found {sorted(loaded.signatures)})")
    return loaded


def detect_clip_encoding(files):
    """"float" or "quantized", from the first clip of the first record of `files`."""
    import tensorflow as tf  # see load_export

    for path in files:
        for record in tf.data.TFRecordDataset(path).take(1):
            try:
                example = tf.train.SequenceExample.FromString(record.numpy())
            except Exception as e:  # protobuf's DecodeError has no stable import path
                raise DataError(f"{path}: the first record is not a tf.train.SequenceExample") from e
            clips = example.feature_lists.feature_list["clip"].feature
            if clips:
                return "quantized" if clips[0].HasField("bytes_list") else "float"
    return "float"


def search(export_dir, pattern, query, top_k=5, batch_size=256, clip_encoding="auto"):
    """The `top_k` best videos for `query`: a list of `(id, score, captions)`, best first.

    Also returns the number of videos searched: `(results, num_videos)`.
    """
    import tensorflow as tf  # see load_export

    from vt_keras.data.files import list_files
    from vt_keras.data.video_text import data_errors, video_text_dataset

    if not query or not query.strip():
        raise ConfigError("--query is empty; expected some words to search for")
    if top_k < 1 or batch_size < 1:
        raise ConfigError(f"--top_k={top_k}, --batch_size={batch_size}: expected both >= 1")
    try:
        files = list_files(pattern)
    except DataError as e:
        raise DataError(f"--data={pattern}: {e}") from None
    loaded = load_export(export_dir)
    info = {k: int(v) for k, v in loaded.signatures["model_info"]().items()}
    if clip_encoding == "auto":
        clip_encoding = detect_clip_encoding(files)
    query_embedding = loaded.signatures["embed_text"](strings=tf.constant([query]))["embedding"].numpy()[0]
    embed_video = loaded.signatures["embed_video"]
    ds = video_text_dataset(files, batch_size, clip_dim=info["clip_dim"], max_clips=info["max_clips"],
                            clip_encoding=clip_encoding)
    best, count = [], 0  # (score, order, id, captions); order keeps ties in file order
    with data_errors():
        for batch in ds:
            video = embed_video(clips=batch["clips"], num_clips=batch["num_clips"])["embedding"].numpy()
            scores = video @ query_embedding
            keep = np.argsort(-scores, kind="stable")[:top_k]
            ids, captions, mask = (batch[k].numpy() for k in ("id", "captions", "caption_mask"))
            for i in keep:
                texts = [c.decode("utf-8") for c, m in zip(captions[i], mask[i]) if m]
                best.append((-float(scores[i]), count + int(i), ids[i].decode("utf-8"), texts))
            best = sorted(best)[:top_k]
            count += len(scores)
    return [(vid, -neg, texts) for neg, _, vid, texts in best], count


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    results, count = search(FLAGS.export_dir, FLAGS.data, FLAGS.query, FLAGS.top_k, FLAGS.batch_size,
                            FLAGS.clip_encoding)
    print(f"query {FLAGS.query!r}: top {len(results)} of {count} videos")
    for rank, (video_id, score, captions) in enumerate(results, start=1):
        print(f"{rank:>3}  {video_id}  score {score:.4f}")
        for caption in captions:
            print(f"       {caption}")
    return 0


def run():
    common.run(main, define_flags)


if __name__ == "__main__":
    sys.exit(run())
