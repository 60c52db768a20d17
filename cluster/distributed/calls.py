"""Ray calls as the rest of smartgate sees them: an error raised inside an actor comes back as
itself (a ``NotFoundError`` stays one, mapped to its status by ``cluster.status``), and a lost
actor, process or node is one exception family the callers retry or turn into UNAVAILABLE."""

from __future__ import annotations

from typing import Any

import ray
from ray import exceptions as rex

from smartgate.errors import SmartgateError, UnavailableError

#: The actor (or the process or node under it) went away: the call may be retried elsewhere.
LOST: tuple[type[BaseException], ...] = (
    rex.RayActorError,
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.ObjectLostError,
    rex.OwnerDiedError,
    rex.LocalRayletDiedError,
)


def get(ref: Any, timeout: float) -> Any:
    """``ray.get(ref)`` within ``timeout`` seconds: an actor's own error is re-raised as it was
    raised (a ``SmartgateError`` keeps its class and message); a timeout is ``UnavailableError``;
    a lost actor raises one of ``LOST``."""
    try:
        return ray.get(ref, timeout=timeout)
    except rex.GetTimeoutError as exc:
        raise UnavailableError(f"the cluster did not answer within {timeout:.0f} s") from exc
    except rex.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, SmartgateError | ValueError):
            raise cause from None
        raise


def gather(refs: list[Any], timeout: float) -> list[Any]:
    """``get`` of several calls sent together (a fan-out), in order."""
    return [get(ref, timeout) for ref in refs]
