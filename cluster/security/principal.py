"""The caller of the current RPC, as established by the auth interceptor.

The interceptor binds a ``Principal`` for the duration of a handler call; servicers, the audit
log and rate limits read it with ``current()``. With authentication switched off (a node
listening on loopback only, for development) every call runs as ``LOCAL``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """``subject``: device id or token subject; ``kind``: "device", "token" or "local";
    ``scopes``: granted scopes; ``communities``: the communities it is bound to (empty: all);
    ``gates``: for devices, the gates it may stream for (empty: none bound)."""

    subject: str
    kind: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    communities: frozenset[str] = field(default_factory=frozenset)
    gates: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        """How the audit log names this caller, e.g. ``token:ops-1`` or ``device:cam-7``."""
        return f"{self.kind}:{self.subject}"


LOCAL = Principal(subject="local", kind="local", scopes=frozenset({"admin"}))

_current: ContextVar[Principal] = ContextVar("smartgate_principal", default=LOCAL)


def current() -> Principal:
    """The principal of the RPC being handled on this thread (``LOCAL`` when auth is off)."""
    return _current.get()


@contextmanager
def bound(principal: Principal) -> Iterator[None]:
    """Make ``principal`` current for the enclosed handler call."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
