"""``smartgate audit verify|list`` and ``smartgate keys rotate|show``, and ``rotate_keys``.

Key rotation (``rotate_keys``; the node must be stopped: it takes the data directory's
exclusive lock): with a key file, a new key is written *in front of* the old ones (so a crash
leaves everything readable), every template, stranger arrays file and thumbnail is
re-encrypted with it, and only then are the old keys dropped from the file. With keys from
``SMARTGATE_PRIVACY__KEY`` the operator puts the new key first in the variable; the rotation
re-encrypts everything with it and says which keys may then be removed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.audit.log import read_records, verify
from cluster.distributed.index import community_dir, stored_communities
from cluster.events.store import EventStore
from indexer import snapshot, strangers
from indexer.crypto import KeyRing, key_id, new_key, write_key_file
from indexer.store import Store, data_dir_lock
from smartgate.config import Config, PrivacyConfig
from smartgate.errors import ConfigError

STRANGERS_DIR = "strangers"  # as cluster.passages.STRANGERS_DIR (not imported: no models)


@dataclass(frozen=True)
class RotationReport:
    """What a rotation re-encrypted, the new current key id, and the key ids dropped (or, for
    keys from the environment, that may now be removed)."""

    templates: int
    strangers: int
    thumbnails: int
    current: str
    retired: tuple[str, ...]
    snapshots: int = 0  # face snapshots deleted (a cache: rewritten under the new key)


def rotate_keys(data_dir: Path, privacy: PrivacyConfig) -> RotationReport:
    """Re-encrypt everything under ``data_dir`` with a new current key (see the module)."""
    # The embedded registry, and each community's store of cluster mode (its index actor's).
    stores = [data_dir] if (data_dir / "registry.db").exists() else []
    stores += [community_dir(data_dir, c) for c in stored_communities(data_dir)]
    if not stores:
        raise ConfigError(f"{data_dir} holds no smartgate data (no registry.db): nothing to rotate")
    lock = data_dir_lock(data_dir, exclusive=True)
    locks: list[int] = []
    try:
        # A running index actor holds its community's store: stop the cluster first.
        locks = [data_dir_lock(path, exclusive=True) for path in stores if path != data_dir]
        old = KeyRing.from_config(privacy)
        from_file = not privacy.key
        ring = old.with_current(new_key()) if from_file else old
        if from_file:
            write_key_file(privacy.key_file, ring.keys)  # old keys kept until done
        templates = sum(_reseal_store(path, ring) for path in stores)
        # Face snapshots (indexer.snapshot) are a cache of the templates: deleted rather than
        # re-sealed; the next clean close writes them under the new key.
        dropped = snapshot.delete_snapshots(data_dir)
        # The embedded node's strangers, and each community's in cluster mode (its actor's).
        holders = [data_dir, *(path for path in stores if path != data_dir)]
        moved = sum(int(strangers.reseal_saved(p / STRANGERS_DIR, ring)) for p in holders)
        events = EventStore(data_dir, keys=ring)
        try:
            thumbnails = events.reseal_thumbnails(ring)
        finally:
            events.close()
        if from_file:
            write_key_file(privacy.key_file, ring.keys[:1])
        retired = tuple(key_id(k).hex() for k in ring.keys[1:])
        return RotationReport(templates, moved, thumbnails, ring.current_id.hex(), retired, dropped)
    finally:
        for fd in (*locks, lock):
            os.close(fd)


def _reseal_store(path: Path, ring: KeyRing) -> int:
    """Re-seal the templates of the registry store under ``path`` (its lock already held)."""
    store = Store(path, ring, lock=False)
    try:
        return store.reseal(ring)
    finally:
        store.close()


def cmd_audit_verify(config: Config) -> int:
    result = verify(config.data_dir)
    if result.ok:
        print(
            f"audit log intact: {result.records} records, head {result.head_seq} {result.head_hash}"
        )
        return 0
    print(
        f"audit log BROKEN at record {result.broken_seq}: {result.problem} "
        f"({result.records} records before it are intact)",
        file=sys.stderr,
    )
    return 1


def cmd_audit_list(config: Config, args: argparse.Namespace) -> int:
    for record in read_records(
        config.data_dir, after_seq=args.after, limit=args.limit, method=args.method
    ):
        print(json.dumps(record.as_json(), ensure_ascii=False), flush=True)
    return 0


def cmd_keys_rotate(config: Config) -> int:
    report = rotate_keys(config.data_dir, config.privacy)
    print(
        f"re-encrypted {report.templates} templates, {report.strangers} stranger files, "
        f"{report.thumbnails} thumbnails with key {report.current}; deleted "
        f"{report.snapshots} face snapshots (rewritten at the next close)"
    )
    if config.privacy.key and report.retired:
        print(
            "keys from SMARTGATE_PRIVACY__KEY: remove the retired keys "
            f"{', '.join(report.retired)} from it now"
        )
    elif report.retired:
        print(f"retired keys {', '.join(report.retired)} (dropped from {config.privacy.key_file})")
    return 0


def cmd_keys_show(config: Config) -> int:
    ring = KeyRing.from_config(config.privacy)
    ids = [key_id(k).hex() for k in ring.keys]
    print(f"data keys from {ring.source}: current {ids[0]}, others {ids[1:] or 'none'}")
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_of: Callable[[argparse.Namespace], Config],
) -> None:
    """Add ``audit`` and ``keys`` to the ``smartgate`` parser; ``config_of(args)`` builds the
    configuration (``--config``, environment, ``--data-dir``)."""
    audit = sub.add_parser("audit", help="verify or list the audit log (audit.db)")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    averify = asub.add_parser("verify", help="check the hash chain; exit 1 at the first break")
    averify.add_argument("--data-dir", type=Path)
    averify.set_defaults(func=lambda a: cmd_audit_verify(config_of(a)))
    alist = asub.add_parser("list", help="print audit records as JSON lines, oldest first")
    alist.add_argument("--data-dir", type=Path)
    alist.add_argument("--after", type=int, default=0, help="records after this seq")
    alist.add_argument("--limit", type=int, default=1000)
    alist.add_argument("--method", help="only this RPC, e.g. SearchFace")
    alist.set_defaults(func=lambda a: cmd_audit_list(config_of(a), a))

    keys = sub.add_parser("keys", help="the data keys that encrypt faces at rest")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = ksub.add_parser("rotate", help="new key, re-encrypt everything (node stopped)")
    rotate.add_argument("--data-dir", type=Path)
    rotate.set_defaults(func=lambda a: cmd_keys_rotate(config_of(a)))
    show = ksub.add_parser("show", help="which key ids are configured (never the keys)")
    show.set_defaults(func=lambda a: cmd_keys_show(config_of(a)))
