"""A distributed deployment for tests (moved to tests/servers.py; these names stay importable
from here)."""

from tests.servers import ADMIN_URI, REDIS_URI, Cluster, running_cluster

__all__ = ["ADMIN_URI", "REDIS_URI", "Cluster", "running_cluster"]
