"""The one tf.data builder of the record readers: files → checked records → batches → parsed batches.

Every reader of the package (`frame_dataset`, `video_dataset`,
`segment_dataset`, `video_text_dataset`) is this pipeline with its own
parse function, so they share file listing and sharding, the per-file check
for truncated or corrupt files (`vt_keras.data.checks.read_checked_records`),
`skip_corrupt_records`, seeded shuffling and `skip_batches`.

Order of the stages (each one is why the next works):
1. the files of the pattern, sharded over input pipelines when there are at
   least as many files as pipelines;
2. shuffled (seeded);
3. read with a deterministic interleave, each record tagged with its file;
4. sharded by record when there are fewer files than pipelines (every
   pipeline then reads every file in the same order);
5. shuffled in a buffer (seeded), then repeated: shuffling before repeating
   keeps epochs apart, so every epoch is a permutation of the records and a
   batch never holds one video twice (duplicates would be false negatives
   of contrastive losses), and each epoch reshuffles files and records;
6. batched; the first `skip_batches` batches dropped while still raw bytes;
7. parsed a batch at a time, prefetched.
"""
import tensorflow as tf

from vt_keras.data.checks import plain, read_checked_records
from vt_keras.data.files import list_files
from vt_keras.errors import ConfigError

__all__ = ["record_dataset"]


def _check_count(name, value, minimum):
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, found {value!r}")
    return int(value)


def record_dataset(file_pattern, batch_size, parse, *, shuffle=False, repeat=False, drop_remainder=False,
                   input_context=None, seed=None, skip_corrupt_records=False, shuffle_buffer_size=256,
                   cycle_length=8, deterministic=True, skip_batches=0):
    """A batched, parsed dataset of the TFRecord files of `file_pattern`.

    Args:
        file_pattern: a glob, several separated by commas, or a list of them
            (see `vt_keras.data.files.list_files`).
        batch_size: records per batch of this dataset (per replica when built
            by `distribute_datasets_from_function`).
        parse: `parse(records, filenames) -> batch`, with `records` and
            `filenames` string tensors `[B]`; called in the tf.data graph.
        shuffle: shuffle the files each epoch and the records in a buffer of
            `shuffle_buffer_size`.
        repeat: repeat forever.
        drop_remainder: drop the last partial batch (static batch size).
        input_context: a `tf.distribute.InputContext`; files are sharded by
            `input_pipeline_id` over `num_input_pipelines`, records when there
            are fewer files than pipelines.
        seed: shuffle seed. With a seed (and `deterministic`) the stream of
            batches is the same on every run.
        skip_corrupt_records: skip the unreadable rest of a truncated or
            corrupt file (counted in `data_counters()`, logged) instead of
            failing with a `DataError` that names the file.
        shuffle_buffer_size: records in the shuffle buffer.
        cycle_length: files read at once by the interleave.
        deterministic: keep a fixed element order (needed for reproducibility
            and for `skip_batches` to resume exactly).
        skip_batches: drop the first `skip_batches` batches of this stream
            before they are parsed: a resumed run continues with the batch the
            interrupted one would have read next, without paying for parsing
            the skipped ones (reading them is still paid).

    Returns:
        A `tf.data.Dataset` of `parse`'s outputs.

    Example:
        >>> ds = record_dataset("data/train-*.tfrecord", 32, lambda records, files: {"record": records})
    """
    batch_size = _check_count("batch_size", batch_size, 1)
    skip_batches = _check_count("skip_batches", skip_batches, 0)
    files = list_files(file_pattern)
    sizes = [tf.io.gfile.stat(f).length for f in files]
    pipelines, pipeline_id = 1, 0
    if input_context is not None:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
    shard_files = pipelines > 1 and len(files) >= pipelines
    shard_records = pipelines > 1 and not shard_files
    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))
    if shard_files:
        ds = ds.shard(pipelines, pipeline_id)
    if shuffle:
        # Record sharding needs the same file order on every pipeline.
        file_seed = 0 if (shard_records and seed is None) else seed
        ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        plain(lambda f, s: read_checked_records(f, s, skip_corrupt_records)),
        cycle_length=max(1, min(int(cycle_length), len(files))), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shard_records:
        ds = ds.shard(pipelines, pipeline_id)
    if shuffle and shuffle_buffer_size > 1:
        ds = ds.shuffle(int(shuffle_buffer_size), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if skip_batches:
        ds = ds.skip(skip_batches)
    ds = ds.map(plain(lambda records, names: parse(records, names)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)
