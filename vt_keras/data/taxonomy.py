"""A hierarchical label taxonomy: classes at levels 0 (coarsest) to 3 (finest).

Per-level metrics and the synthetic data read the taxonomy from a file
`taxonomy.json` kept beside the records (`find_taxonomy(pattern)` finds it,
`load_taxonomy(setting, pattern)` follows a config's `data.taxonomy`). Its
format (version 1):

    {
      "format": "vt_keras.taxonomy",
      "version": 1,
      "classes": [
        {"id": 0, "name": "c0", "level": 0, "parent": null},
        {"id": 4, "name": "c0.0", "level": 1, "parent": 0},
        ...
      ]
    }

Rules, checked on load: the ids are exactly 0 .. num_classes - 1, each once
(the list may be in any order); `level` is an int >= 0 (YouTube-8M-style
hierarchies use 0 to 3, deeper ones are allowed); a class at level 0 has
`parent` null, any other class has the id of a class one level up. `name`
is a non-empty string. Extra keys are ignored. A file that breaks a rule is
a `DataError` naming the file and the rule.
"""
import dataclasses
import itertools
import json
import os

import numpy as np
import tensorflow as tf

from vt_keras.data.files import split_patterns
from vt_keras.errors import DataError

FORMAT = "vt_keras.taxonomy"
VERSION = 1
FILE_NAME = "taxonomy.json"


@dataclasses.dataclass(frozen=True)
class TaxonomyClass:
    """One class: its id (label index), name, level and parent id (None at level 0)."""

    id: int
    name: str
    level: int
    parent: int = None


class Taxonomy:
    """A label hierarchy over class ids `0 .. num_classes - 1`.

    Args:
        classes: `TaxonomyClass`es (or dicts with keys id, name, level, parent).
        source: what to name in error messages (a path, by default "taxonomy").

    Example:
        >>> tax = Taxonomy.from_shape((4, 3, 2, 2))
        >>> tax.num_classes, tax.levels()[:5], tax.ancestors(87)
        (88, array([0, 0, 0, 0, 1]), [39, 15, 3])
    """

    def __init__(self, classes, source="taxonomy"):
        items = [c if isinstance(c, TaxonomyClass) else _from_dict(c, source) for c in classes]
        self.classes = tuple(sorted(items, key=lambda c: c.id))
        _validate(self.classes, source)
        self._children = {c.id: [] for c in self.classes}
        for c in self.classes:
            if c.parent is not None:
                self._children[c.parent].append(c.id)

    @classmethod
    def from_shape(cls, shape, prefix="c"):
        """A balanced taxonomy: `shape[0]` roots, each with `shape[1]` children, ...

        Ids go level by level; a class is named after its path, e.g. `c2.0.1`.
        """
        shape = tuple(int(s) for s in shape)
        if not shape or min(shape) < 1:
            raise DataError(f"taxonomy shape: expected positive branch counts, found {shape}")
        classes, previous = [], [(None, prefix)]
        for level, branches in enumerate(shape):
            current = []
            for parent, name in previous:
                for k in range(branches):
                    child = (len(classes), f"{name}{k}" if parent is None else f"{name}.{k}")
                    classes.append(TaxonomyClass(child[0], child[1], level, parent))
                    current.append(child)
            previous = current
        return cls(classes, source=f"taxonomy of shape {shape}")

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def num_levels(self):
        return 1 + max(c.level for c in self.classes)

    def levels(self):
        """Level of every class: int array `[num_classes]`."""
        return np.array([c.level for c in self.classes], np.int64)

    def parent(self, class_id):
        return self.classes[class_id].parent

    def children(self, class_id):
        return list(self._children[class_id])

    def ancestors(self, class_id):
        """Ids of the ancestors of `class_id`, nearest first (parent, ..., root)."""
        out, parent = [], self.classes[class_id].parent
        while parent is not None:
            out.append(parent)
            parent = self.classes[parent].parent
        return out

    def leaves(self):
        """Ids of the classes without children."""
        return [c.id for c in self.classes if not self._children[c.id]]

    def root(self, class_id):
        """The level-0 ancestor of `class_id` (itself at level 0)."""
        chain = self.ancestors(class_id)
        return chain[-1] if chain else class_id

    def to_dict(self):
        return {"format": FORMAT, "version": VERSION, "classes": [dataclasses.asdict(c) for c in self.classes]}

    def save(self, path):
        """Writes the documented JSON format to `path`."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path):
        """Reads a taxonomy file; a malformed one is a `DataError` naming it."""
        if os.path.isdir(path):
            path = os.path.join(path, FILE_NAME)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise DataError(f"taxonomy file '{path}' does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"taxonomy file '{path}': expected JSON, found a syntax error ({e})") from None
        source = f"taxonomy file '{path}'"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{source}: expected \"format\": \"{FORMAT}\", found {found!r}")
        if data.get("version") != VERSION:
            raise DataError(f"{source}: expected version {VERSION}, found {data.get('version')!r}")
        if not isinstance(data.get("classes"), list):
            raise DataError(f"{source}: expected a list under \"classes\", found {type(data.get('classes')).__name__}")
        return cls(data["classes"], source=source)

    def __eq__(self, other):
        return isinstance(other, Taxonomy) and self.classes == other.classes

    def __repr__(self):
        counts = np.bincount(self.levels())
        return f"Taxonomy({self.num_classes} classes; per level {counts.tolist()})"


def find_taxonomy(file_pattern):
    """Path of the `taxonomy.json` beside the data of `file_pattern`, or None if there is none.

    "Beside" is the directory of the first pattern (`data/yt8m/train-*.tfrecord`
    → `data/yt8m/taxonomy.json`), where `bin/make_data` writes it.

    Example:
        >>> find_taxonomy("data/yt8m/train-*.tfrecord")
        'data/yt8m/taxonomy.json'
    """
    patterns = split_patterns(file_pattern)
    if not patterns:
        return None
    path = os.path.join(os.path.dirname(patterns[0]), FILE_NAME)
    return path if tf.io.gfile.exists(path) else None


def load_taxonomy(setting, file_pattern, num_classes=None):
    """The taxonomy a config's `data.taxonomy` setting names, or None.

    Args:
        setting: "" or None (no taxonomy), "auto" (`taxonomy.json` beside the
            data of `file_pattern` if there is one) or the path of a taxonomy
            file (an error if it does not exist).
        file_pattern: the data the taxonomy describes.
        num_classes: if given, the number of classes the taxonomy must have.

    Returns:
        A `Taxonomy`, or None.

    Raises:
        DataError: the file is missing or malformed, or has another number of classes.

    Example:
        >>> load_taxonomy("auto", "data/yt8m/validate-*.tfrecord", num_classes=88).num_levels
        4
    """
    if not setting:
        return None
    path = find_taxonomy(file_pattern) if setting == "auto" else setting
    if path is None:
        return None
    taxonomy = Taxonomy.load(path)
    if num_classes is not None and taxonomy.num_classes != int(num_classes):
        raise DataError(f"taxonomy {path} has {taxonomy.num_classes} classes; expected data.num_classes="
                        f"{int(num_classes)}")
    return taxonomy


def _from_dict(entry, source):
    if not isinstance(entry, dict):
        raise DataError(f"{source}: expected each class to be an object, found {entry!r}")
    missing = [k for k in ("id", "name", "level") if k not in entry]
    if missing:
        raise DataError(f"{source}: class {entry!r} lacks key(s) {missing}")
    for key in ("id", "level", "parent"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(f"{source}: class {entry!r}: expected an integer '{key}', found {value!r}")
    if not isinstance(entry["name"], str) or not entry["name"]:
        raise DataError(f"{source}: class {entry!r}: expected a non-empty string 'name'")
    return TaxonomyClass(entry["id"], entry["name"], entry["level"], entry.get("parent"))


def _validate(classes, source):
    if not classes:
        raise DataError(f"{source}: expected at least one class, found none")
    ids = [c.id for c in classes]
    for key, group in itertools.groupby(ids):
        if len(list(group)) > 1:
            raise DataError(f"{source}: class id {key} appears more than once")
    if ids != list(range(len(ids))):
        raise DataError(f"{source}: expected class ids 0..{len(ids) - 1}, found ids from {ids[0]} to {ids[-1]}")
    for c in classes:
        if c.level < 0:
            raise DataError(f"{source}: class {c.id}: expected level >= 0, found {c.level}")
        if c.level == 0 and c.parent is not None:
            raise DataError(f"{source}: class {c.id} is at level 0: expected parent null, found {c.parent}")
        if c.level > 0:
            if c.parent is None or not 0 <= c.parent < len(classes):
                raise DataError(f"{source}: class {c.id} at level {c.level}: expected a parent id, found {c.parent}")
            if classes[c.parent].level != c.level - 1:
                raise DataError(
                    f"{source}: class {c.id} at level {c.level}: expected its parent {c.parent} at level "
                    f"{c.level - 1}, found level {classes[c.parent].level}")
