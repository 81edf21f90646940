"""Tests of the label taxonomy and its JSON file format."""
import json

import numpy as np
import pytest

from vt_keras.data.taxonomy import Taxonomy, TaxonomyClass, find_taxonomy, load_taxonomy
from vt_keras.errors import DataError


def _brute_force_ancestors(classes, class_id):
    parent_of = {c.id: c.parent for c in classes}
    chain = []
    while parent_of[class_id] is not None:
        class_id = parent_of[class_id]
        chain.append(class_id)
    return chain


def test_from_shape_levels_parents_and_ancestors():
    shape = (4, 3, 2, 2)
    tax = Taxonomy.from_shape(shape)
    assert tax.num_classes == 4 + 12 + 24 + 48 and tax.num_levels == 4
    np.testing.assert_array_equal(np.bincount(tax.levels()), np.cumprod(shape))
    assert tax.ancestors(87) == [39, 15, 3] and tax.root(87) == 3 and tax.ancestors(2) == []
    assert tax.classes[87].name == "c3.2.1.1"
    for c in tax.classes:
        chain = tax.ancestors(c.id)
        assert chain == _brute_force_ancestors(tax.classes, c.id)
        assert [tax.classes[a].level for a in chain] == list(range(c.level - 1, -1, -1))
        assert len(tax.children(c.id)) == (shape[c.level + 1] if c.level + 1 < len(shape) else 0)
    assert tax.leaves() == list(range(40, 88))


def test_save_load_round_trip_and_documented_format(tmp_path):
    tax = Taxonomy.from_shape((2, 3))
    tax.save(tmp_path / "taxonomy.json")
    data = json.loads((tmp_path / "taxonomy.json").read_text())
    assert data["format"] == "vt_keras.taxonomy" and data["version"] == 1
    assert data["classes"][3] == {"id": 3, "name": "c0.1", "level": 1, "parent": 0}
    assert Taxonomy.load(tmp_path / "taxonomy.json") == tax
    assert Taxonomy.load(str(tmp_path)) == tax  # a directory means its taxonomy.json


def test_load_accepts_any_class_order_and_extra_keys(tmp_path):
    classes = [{"id": 2, "name": "b", "level": 1, "parent": 0, "note": "x"},
               {"id": 0, "name": "root", "level": 0, "parent": None},
               {"id": 1, "name": "a", "level": 1, "parent": 0}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format": "vt_keras.taxonomy", "version": 1, "classes": classes}))
    tax = Taxonomy.load(path)
    assert tax.classes[2] == TaxonomyClass(2, "b", 1, 0)
    assert tax.children(0) == [1, 2] and list(tax.levels()) == [0, 1, 1]


GOOD = [{"id": 0, "name": "r", "level": 0, "parent": None}, {"id": 1, "name": "a", "level": 1, "parent": 0},
        {"id": 2, "name": "b", "level": 2, "parent": 1}]


def _with(index, **changes):
    classes = [dict(c) for c in GOOD]
    classes[index].update(changes)
    return {"format": "vt_keras.taxonomy", "version": 1, "classes": classes}


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "expected JSON"),
    (json.dumps([1, 2]), 'expected "format": "vt_keras.taxonomy", found \'list\''),
    (json.dumps({"format": "other", "version": 1, "classes": GOOD}), "found 'other'"),
    (json.dumps({"format": "vt_keras.taxonomy", "version": 7, "classes": GOOD}), "expected version 1, found 7"),
    (json.dumps({"format": "vt_keras.taxonomy", "version": 1, "classes": {}}), 'expected a list under "classes"'),
    (json.dumps({"format": "vt_keras.taxonomy", "version": 1, "classes": []}), "at least one class"),
    (json.dumps(_with(2, id=1)), "class id 1 appears more than once"),
    (json.dumps(_with(2, id=5)), "expected class ids 0..2"),
    (json.dumps(_with(1, parent=None)), "class 1 at level 1: expected a parent id, found None"),
    (json.dumps(_with(2, parent=0)), "expected its parent 0 at level 1, found level 0"),
    (json.dumps(_with(0, parent=2)), "class 0 is at level 0: expected parent null, found 2"),
    (json.dumps(_with(1, level="1")), "expected an integer 'level'"),
    (json.dumps(_with(1, name="")), "non-empty string 'name'"),
    (json.dumps({"format": "vt_keras.taxonomy", "version": 1, "classes": [{"id": 0, "level": 0}]}),
     "lacks key(s) ['name']"),
])
def test_malformed_file_is_a_data_error_naming_file_and_problem(tmp_path, content, fragment):
    path = tmp_path / "taxonomy.json"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        Taxonomy.load(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="taxonomy file '.*nope.json' does not exist"):
        Taxonomy.load(tmp_path / "nope.json")


def test_find_taxonomy_beside_the_first_pattern(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Taxonomy.from_shape((2, 2)).save(tmp_path / "a" / "taxonomy.json")
    assert find_taxonomy(f"{tmp_path}/a/train-*.tfrecord,{tmp_path}/b/x.tfrecord") == str(tmp_path / "a" / "taxonomy.json")
    assert find_taxonomy(f"{tmp_path}/b/train-*.tfrecord,{tmp_path}/a/x.tfrecord") is None
    assert find_taxonomy([f"{tmp_path}/a/v-*.tfrecord"]) == str(tmp_path / "a" / "taxonomy.json")


def test_load_taxonomy_follows_the_config_setting(tmp_path):
    Taxonomy.from_shape((2, 2)).save(tmp_path / "taxonomy.json")
    other = tmp_path / "other.json"
    Taxonomy.from_shape((3,)).save(other)
    pattern = f"{tmp_path}/validate-*.tfrecord"
    assert load_taxonomy("auto", pattern, num_classes=6) == Taxonomy.from_shape((2, 2))
    assert load_taxonomy("auto", f"{tmp_path}/nowhere/validate-*.tfrecord") is None
    assert load_taxonomy("", pattern) is None and load_taxonomy(None, pattern) is None
    assert load_taxonomy(str(other), pattern, num_classes=3).num_classes == 3
    with pytest.raises(DataError, match=r"taxonomy .*other.json has 3 classes; expected data.num_classes=6"):
        load_taxonomy(str(other), pattern, num_classes=6)
    with pytest.raises(DataError, match=r"taxonomy file '.*missing.json' does not exist"):
        load_taxonomy(str(tmp_path / "missing.json"), pattern)
