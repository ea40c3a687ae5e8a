import json
import pickle

import numpy as np
import pytest

from streamlearn.core.labels import LabelMap


def test_slots_in_order_of_first_appearance():
    labels = LabelMap(capacity=4)
    assert labels.add_many(["b", "a", "b", "c"]).tolist() == [0, 1, 0, 2]
    assert labels.classes == ["b", "a", "c"]
    assert len(labels) == 3
    assert labels.lookup("a") == 1 and labels.lookup("zzz") is None
    assert labels.mask().tolist() == [True, True, True, False]


def test_bool_and_int_kept_apart():
    labels = LabelMap(capacity=4)
    assert labels.add(True) == 0
    assert labels.add(1) == 1
    assert labels.add(False) == 2
    assert labels.add(0) == 3
    assert labels.lookup(True) == 0 and labels.lookup(1) == 1
    assert labels.classes == [True, 1, False, 0]
    assert type(labels.classes[0]) is bool and type(labels.classes[1]) is int


def test_int_and_float_of_same_value_share_a_slot():
    labels = LabelMap(capacity=3)
    labels.add(1)
    assert labels.add(1.0) == 0  # a JSON 1.0 names class 1
    assert len(labels) == 1


def test_capacity_full_returns_none_and_minus_one():
    labels = LabelMap(capacity=2)
    assert labels.add_many(["x", "y", "z", "x"]).tolist() == [0, 1, -1, 0]
    assert labels.classes == ["x", "y"]
    assert labels.add("z") is None


def test_too_many_initial_classes_refused():
    with pytest.raises(ValueError, match="capacity"):
        LabelMap(capacity=1, classes=["a", "b"])


def test_fixed_never_grows():
    labels = LabelMap(capacity=5, classes=["no", "yes"], fixed=True)
    assert labels.add("maybe") is None
    assert labels.add_many(["yes", "no", "maybe"]).tolist() == [1, 0, -1]
    assert labels.classes == ["no", "yes"]


def test_int_index_into_fixed_string_classes():
    labels = LabelMap(capacity=3, classes=["no", "yes"], fixed=True)
    assert labels.lookup(1) == 1 and labels.lookup(0) == 0
    assert labels.lookup(2) is None and labels.lookup(-1) is None
    assert labels.lookup(True) is None  # a bool is not an index
    assert labels.lookup(np.int64(1)) == 1


def test_int_is_not_an_index_when_classes_are_not_fixed_strings():
    assert LabelMap(3, ["no", "yes"], fixed=False).lookup(1) is None
    assert LabelMap(3, [5, 7], fixed=True).lookup(1) is None
    assert LabelMap(3, [5, 7], fixed=True).lookup(7) == 1


def test_numpy_scalars_become_python_values():
    labels = LabelMap(capacity=4)
    assert labels.add(np.int64(3)) == 0
    assert labels.add(3) == 0
    assert labels.add(np.bool_(True)) == 1
    assert labels.add(np.str_("s")) == 2
    assert labels.lookup("s") == 2
    assert [type(c) for c in labels.classes] == [int, bool, str]
    json.dumps(labels.state_dict())


def test_state_round_trip_through_json():
    labels = LabelMap(capacity=5)
    labels.add_many([True, 1, "a", 2.5])
    state = json.loads(json.dumps(labels.state_dict()))
    restored = LabelMap.from_state_dict(state)
    assert restored.classes == labels.classes
    assert [type(c) for c in restored.classes] == [bool, int, str, float]
    assert restored.lookup(True) == 0 and restored.lookup(1) == 1
    assert restored.add("new") == 4 and restored.add("more") is None
    fixed = LabelMap.from_state_dict(LabelMap(3, ["n", "y"], fixed=True).state_dict())
    assert fixed.fixed and fixed.add("z") is None and fixed.lookup(1) == 1


def test_repeated_batches_resolve_as_the_first_did():
    labels = LabelMap(capacity=2)
    first = labels.add_many(["x", True, 1, None, "x"]).tolist()
    assert first == [0, 1, -1, -1, 0]  # True and 1 are two classes; 1 finds no slot
    for _ in range(3):  # looked up now, the same answer; a rejected label stays rejected
        assert labels.add_many(["x", True, 1, None, "x"]).tolist() == first
        assert labels.add_many([True, "x"]).tolist() == [1, 0]
    assert labels.classes == ["x", True]


def test_pickle_drops_and_rebuilds_the_lookup_table():
    labels = LabelMap(capacity=3)
    labels.add_many(["a", "b"])
    restored = pickle.loads(pickle.dumps(labels))
    assert "_resolved" not in labels.__getstate__()
    assert restored.add_many(["b", "a", "c"]).tolist() == [1, 0, 2]
    assert restored.classes == ["a", "b", "c"]
