import pytest

import streamlearn.errors as errors
from streamlearn.errors import ConfigError, SchemaError, SourceError, StreamlearnError


@pytest.mark.parametrize("cls", [ConfigError, SchemaError, SourceError])
def test_every_error_derives_from_the_root(cls):
    assert issubclass(cls, StreamlearnError)
    assert issubclass(StreamlearnError, Exception)
    with pytest.raises(StreamlearnError, match="boom"):
        raise cls("boom")


def test_branches_are_distinct():
    assert not issubclass(ConfigError, SourceError)
    assert not issubclass(SourceError, ConfigError)
    assert not issubclass(SchemaError, ConfigError)


def test_all_lists_the_public_names():
    expected = [
        "ArtifactError",
        "CheckpointError",
        "ConfigError",
        "ExportError",
        "KafkaUnavailable",
        "RegistryError",
        "SchemaError",
        "SourceError",
        "StreamlearnError",
    ]
    assert sorted(errors.__all__) == expected
    for name in errors.__all__:
        assert name in (errors.__doc__ or "")  # the tree in the docstring names every class
