import pytest

from keras_mtl.registry import Registry


class Base:
    def __init__(self, size=1):
        self.size = size


def make_registry():
    registry = Registry("widget", base=Base)
    registry.register("base")(Base)
    registry.register("two")(lambda: Base(2))
    return registry


def test_get_by_name_class_dict_and_instance():
    registry = make_registry()
    assert registry.get("two").size == 2
    assert registry.get("base", size=5).size == 5
    assert registry.get(Base).size == 1
    assert registry.get({"class_name": "Base", "config": {"size": 3}}).size == 3
    instance = Base(7)
    assert registry.get(instance) is instance
    assert registry.names() == ["base", "two"]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown widget 'three'. Valid names: base, two"):
        make_registry().get("three")


def test_bad_identifiers():
    registry = make_registry()
    with pytest.raises(ValueError, match="class_name"):
        registry.get({"config": {}})
    with pytest.raises(TypeError, match="Cannot interpret 3"):
        registry.get(3)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("two")(Base)
