"""A hierarchical label taxonomy: classes at levels 0 (coarsest) to 3 (finest).

Per-level metrics and the synthetic data read the taxonomy from a file
`taxonomy.json` kept beside the records. Its format (version 1):

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

from vt_keras.errors import DataError

FORMAT = "vt_keras.taxonomy"
VERSION = 1


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
            path = os.path.join(path, "taxonomy.json")
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
