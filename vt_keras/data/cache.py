"""The cache of generated default datasets: made once, atomically, and remade when its generator changes.

A dataset `name` lives in `<cache_dir>/<name>` (`cache_dir`:
`$VT_KERAS_CACHE`, or `~/.cache/vt_keras`). Its key is the name *and* the
generator version: `cache.json` in the directory records the version that
wrote it, and a directory written by another version is replaced as a
whole, never half used. A directory that is neither ours (no `cache.json`)
nor an older copy of ours (a `manifest.json` the generators write) is left
alone: that is a `DataError` asking the user to move it.
"""
import json
import os
import shutil
import tempfile

from vt_keras.errors import DataError

__all__ = ["default_cache_dir", "ensure_cached"]

STAMP = "cache.json"


def default_cache_dir():
    """`$VT_KERAS_CACHE`, or `~/.cache/vt_keras` when it is unset."""
    return os.environ.get("VT_KERAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vt_keras")


def _stamp(path):
    try:
        with open(os.path.join(path, STAMP)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _current(path, name, generator):
    stamp = _stamp(path)
    return isinstance(stamp, dict) and stamp.get("dataset") == name and stamp.get("generator") == generator


def ensure_cached(name, generator, make, cache_dir=None):
    """Path of the cached dataset `name` of generator version `generator`, made by `make` if missing.

    The data is written by `make(directory)` into a temporary directory beside
    the final one and renamed into place, so an interrupted run never leaves
    half a dataset and two first uses at once both end with a complete one.

    Args:
        name: the dataset's directory name in the cache.
        generator: the version of the code that generates it (an int); bump it
            whenever what `make` writes changes.
        make: `make(directory)` writes the dataset into `directory`.
        cache_dir: the cache root (default `default_cache_dir()`).

    Returns:
        The dataset's directory.

    Raises:
        DataError: the directory exists but was not written by this cache.

    Example:
        >>> root = ensure_cached("yt8m_synthetic_v1", 3, make_yt8m_data)
    """
    root = cache_dir or default_cache_dir()
    path = os.path.join(root, name)
    if _current(path, name, generator):
        return path
    if os.path.exists(path) and not any(os.path.exists(os.path.join(path, f)) for f in (STAMP, "manifest.json")):
        raise DataError(f"dataset directory '{path}' exists but was not written by the data cache (no {STAMP} "
                        "or manifest.json); move or delete it to regenerate")
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
    stale = None
    try:
        make(tmp)
        with open(os.path.join(tmp, STAMP), "w") as f:
            json.dump({"dataset": name, "generator": generator}, f)
            f.write("\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is for every user of the machine
        if os.path.exists(path) and not _current(path, name, generator):
            stale = tempfile.mkdtemp(prefix=f".{name}.stale.", dir=root)
            os.rename(path, os.path.join(stale, "old"))
        try:
            os.rename(tmp, path)
        except OSError:
            # Another process renamed its copy into place first: use it if it is current.
            if not _current(path, name, generator):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if stale:
            shutil.rmtree(stale, ignore_errors=True)
    return path
