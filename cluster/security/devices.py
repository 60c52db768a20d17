"""The devices file: which community and gates each capture device may stream for.

A TOML file (``security.devices``)::

    [devices.cam-north-1]
    community = "c1"
    gates = ["north-gate"]

    [devices.cam-unit3]
    community = "c1"
    gates = ["unit-3-door", "unit-3-garage"]

A device's client certificate names its id (``smartgate certs device DIR ID``); this file binds
the id. A certificate whose device is not listed gets PERMISSION_DENIED, so removing a device
here revokes it without touching the CA.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.security.certs import check_name
from cluster.security.policy import GATE
from cluster.security.principal import Principal
from smartgate.errors import ConfigError, InvalidInputError, PermissionDeniedError


@dataclass(frozen=True)
class DeviceBook:
    """Device id → its principal (kind ``device``, scope ``gate``, one community, its gates)."""

    devices: Mapping[str, Principal]

    @classmethod
    def load(cls, path: Path) -> DeviceBook:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"security.devices: {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"security.devices: {path}: {exc}") from exc
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str = "devices file") -> DeviceBook:
        unknown = set(data) - {"devices"}
        if unknown:
            raise ConfigError(f"{where}: unknown table(s) {sorted(unknown)}; use [devices.<id>]")
        table = data.get("devices", {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [devices] must be a table of device ids")
        return cls(
            {device_id: _device(device_id, entry, where) for device_id, entry in table.items()}
        )

    def principal(self, device_id: str) -> Principal:
        """The bound principal of ``device_id``; PERMISSION_DENIED when it is not listed."""
        found = self.devices.get(device_id)
        if found is None:
            raise PermissionDeniedError(
                f"device {device_id!r} has a valid certificate but is not bound to a community "
                "and gates in the devices file"
            )
        return found


def _device(device_id: str, entry: Any, where: str) -> Principal:
    try:
        check_name("device id", device_id)
    except InvalidInputError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: devices.{device_id} must be a table")
    unknown = set(entry) - {"community", "gates"}
    if unknown:
        raise ConfigError(f"{where}: devices.{device_id}: unknown field(s) {sorted(unknown)}")
    community, gates = entry.get("community"), entry.get("gates")
    if not isinstance(community, str) or not community:
        raise ConfigError(f'{where}: devices.{device_id} needs community = "..."')
    if not isinstance(gates, list) or not gates or not all(isinstance(g, str) and g for g in gates):
        raise ConfigError(f'{where}: devices.{device_id} needs gates = ["..."] (one or more)')
    return Principal(
        subject=device_id,
        kind="device",
        scopes=frozenset({GATE}),
        communities=frozenset({community}),
        gates=frozenset(gates),
    )
