"""Starting cluster mode: joining (or starting) Ray, the frontend node, ``smartgate cluster up``.

``open_cluster_node(config)`` is what ``smartgate serve --cluster ADDRESS`` runs instead of
``Node.open``: the same ``Node`` (scheduler, passages, event log, metrics) around a
``ClusterEngine``, so the servicers and the gRPC API are unchanged. Passages, tracking and events
stay on the frontend (its ``data_dir``); the registry lives in the index actors (their stores
under the same ``data_dir``, which every node must see: one machine, or shared storage).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any, cast

import ray

from cluster.distributed.engine import ClusterEngine
from cluster.engine import Engine
from cluster.node import Node
from smartgate.config import ClusterConfig, Config
from smartgate.errors import ConfigError

log = logging.getLogger(__name__)

MB = 1024 * 1024


def connect(config: ClusterConfig) -> bool:
    """Join the Ray cluster at ``config.address`` (``local``: start one in this process).
    Returns False when this process is already connected (tests, notebooks)."""
    if ray.is_initialized():
        return False
    if not config.address:
        raise ConfigError("cluster.address is empty: that is embedded mode, not cluster mode")
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if config.address == "local":
        ray.init(
            address="local",
            num_cpus=config.num_cpus or None,
            object_store_memory=config.object_store_mb * MB or None,
            include_dashboard=False,
            _system_config=system_config(config.inline_bytes),
            **common,
        )
    else:
        ray.init(address=config.address, **common)
    return True


def system_config(inline_bytes: int) -> dict[str, Any]:
    """Ray settings of a cluster this process starts: frames travel inside the call up to
    ``inline_bytes`` (0: Ray's default, which sends anything over 100 KB through the object
    store, and every 1080p frame with it)."""
    return {"max_direct_call_object_size": inline_bytes} if inline_bytes > 0 else {}


class ClusterNode(Node):
    """A ``Node`` whose engine is a ``ClusterEngine`` (which it owns: ``close`` also stops the
    worker pool)."""


def open_cluster_node(config: Config) -> ClusterNode:
    """Connect to Ray, start the worker pool (blocks until ``cluster.min_workers`` are warm)
    and wrap the frontend's scheduler, passages and event log around it."""
    connect(config.cluster)
    engine = ClusterEngine.open(config)
    try:
        node = ClusterNode.around(cast(Engine, engine))
    except BaseException:
        engine.close()
        raise
    node.owns_engine = True
    engine.pool.depth = lambda: node.scheduler.depth
    return cast(ClusterNode, node)


@dataclass
class LocalCluster:
    """A multi-process Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head
    and ``nodes - 1`` more nodes, each a raylet with its own object store."""

    nodes: int = 2
    cpus_per_node: int = 1
    object_store_mb: int = 150
    inline_bytes: int = ClusterConfig.inline_bytes

    def start(self) -> Any:
        from ray.cluster_utils import Cluster

        if self.nodes < 1 or self.cpus_per_node < 1 or self.object_store_mb < 75:
            raise ConfigError("cluster up needs nodes >= 1, cpus >= 1 and object store >= 75 MB")
        args: dict[str, Any] = {
            "num_cpus": self.cpus_per_node,
            "object_store_memory": self.object_store_mb * MB,
        }
        head = {
            **args,
            "include_dashboard": False,
            "_system_config": system_config(self.inline_bytes),
        }
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for _ in range(self.nodes - 1):
            cluster.add_node(**args)
        cluster.wait_for_nodes()
        return cluster


def cluster_up(nodes: int, cpus_per_node: int, object_store_mb: int) -> int:
    """``smartgate cluster up``: start the local cluster, print its address, hold it until
    SIGINT or SIGTERM, then take it down."""
    cluster = LocalCluster(nodes, cpus_per_node, object_store_mb).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"ray cluster up: {nodes} node(s) × {cpus_per_node} CPU at {cluster.address}\n"
        f"serve on it with: smartgate serve --cluster {cluster.address}",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        cluster.shutdown()
        print("ray cluster down", flush=True)
    return 0
