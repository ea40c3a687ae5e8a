"""The export, registry and serve settings sections (issue 5)."""

from __future__ import annotations

import pytest

from streamlearn.errors import ConfigError
from streamlearn.settings import load_settings


def test_defaults():
    s = load_settings()
    assert s.registry.kind == "filesystem" and s.serve.admin_token is None
    assert s.export.every_steps > 0 and 0 < s.export.tolerance < 1e-2


def test_admin_token_is_secret_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_SERVE__ADMIN_TOKEN", "hunter2")
    monkeypatch.setenv("STREAMLEARN_REGISTRY__PASSWORD", "redis-pass")
    s = load_settings()
    assert s.serve.admin_token.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "redis-pass" not in repr(s)


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("serve", {"model_name": "has space"}, "serve.model_name"),
        ("serve", {"port": 70000}, "serve.port"),
        ("registry", {"kind": "s3"}, "registry.kind"),
        ("export", {"tolerance": 0}, "export.tolerance"),
        ("export", {"unknown": 1}, "export.unknown"),
    ],
)
def test_errors_name_the_key(section, values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(**{section: values})
