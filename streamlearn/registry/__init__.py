"""Model registries: a filesystem one (embedded default) and a Redis one (many replicas)."""

from streamlearn.registry.base import Registry, StoredArtifact
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry

__all__ = ["FilesystemRegistry", "RedisRegistry", "Registry", "StoredArtifact"]
