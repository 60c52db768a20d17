"""Passages end to end: real-photo passages streamed through a real server become one decision
and one event each; queries, trajectories, thumbnails and alerts come out of the same run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from streaming import stream_in_step

from benchmarks.scenes import PassageSpec, composite, passage_frames
from cluster.engine import Engine, FrameResult
from cluster.node import Node
from cluster.server import RunningServer, start_server
from indexer.registry import FaceRegistry
from recognizer.faces.analyzer import WHOLE_FRAME_STAGE, searched_whole_frame
from recognizer.faces.carry import CarryOffer
from smartgate.config import Config, EventsConfig, TrackingConfig
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    common_pb2,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2_grpc,
)

pytestmark = pytest.mark.integration

QUIET_S = 0.4


def _config(base: Config, data_dir: Path, **events: object) -> Config:
    return replace(
        base,
        data_dir=data_dir,
        tracking=TrackingConfig(quiet_s=QUIET_S),
        events=replace(EventsConfig(), stranger_repeat_n=1, **events),  # type: ignore[arg-type]
    )


class Site:
    """A node and its server for one test; ``restart()`` closes and reopens both."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.node = Node.around(engine)
        self.server: RunningServer = start_server(self.node, engine.config.server)
        self.channel = grpc.insecure_channel(self.server.address)

    @property
    def capture(self) -> capture_pb2_grpc.CaptureStub:
        return capture_pb2_grpc.CaptureStub(self.channel)

    @property
    def search(self) -> search_pb2_grpc.SearchStub:
        return search_pb2_grpc.SearchStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)
        self.node.close()

    def restart(self) -> Site:
        self.close()
        registry = FaceRegistry(self.engine.config.data_dir, self.engine.analyzer.embedder.dim)
        engine = Engine(
            self.engine.config, self.engine.analyzer, registry, self.engine.plate_reader
        )
        return Site(engine)

    def events(self, community: str = "c1", **filters: object) -> list[events_pb2.Event]:
        self.node.events.writer.flush(5)
        reply = self.search.QueryEvents(
            events_pb2.QueryEventsRequest(community=community, **filters)  # type: ignore[arg-type]
        )
        return list(reply.events)


@pytest.fixture
def site(face_analyzer, plate_reader, base_config: Config, tmp_path: Path) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    config = _config(base_config, tmp_path)
    engine = Engine(
        config, face_analyzer, FaceRegistry(tmp_path, face_analyzer.embedder.dim), plate_reader
    )
    s = Site(engine)
    registry = registry_pb2_grpc.RegistryStub(s.channel)
    s.registry = registry  # type: ignore[attr-defined]
    yield s
    s.close()


def _enroll(site: Site, faces_dir: Path, person: str, photo: str, role: int) -> None:
    site.registry.EnrollPerson(
        registry_pb2.EnrollPersonRequest(  # type: ignore[attr-defined]
            community="c1", person_id=person, role=role, images=[(faces_dir / photo).read_bytes()]
        )
    )


def _passage(faces_dir: Path, photo: str, frames: int = 30, seed: int = 0) -> list[bytes]:
    return passage_frames(cv2.imread(str(faces_dir / photo)), PassageSpec(frames=frames), seed)


def _stream(
    site: Site,
    images: list[bytes],
    gate: str = "door-1",
    first_seq: int = 0,
    lane: int = capture_pb2.LANE_KIND_PEDESTRIAN,
) -> list[capture_pb2.Decision]:
    frames = (
        capture_pb2.Frame(
            community="c1", gate=gate, device=f"cam-{gate}", seq=first_seq + i, image=img, lane=lane
        )
        for i, img in enumerate(images)
    )
    return list(site.capture.Stream(frames, timeout=120))


def _wait_quiet() -> None:
    time.sleep(QUIET_S + 0.6)  # the passage ends, the expiry thread records it


def test_a_30_frame_passage_is_one_decision_and_one_event(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    decisions = _stream(site, _passage(faces_dir, "examples_obama2.jpg"))
    assert len(decisions) == 30
    sent = [i for i, d in enumerate(decisions) if d.action != capture_pb2.ACTION_NONE]
    assert [decisions[i].action for i in sent] == [capture_pb2.ACTION_OPEN]
    recognisable = next(
        i for i, d in enumerate(decisions) if d.frame_action == capture_pb2.ACTION_OPEN
    )
    assert sent[0] <= recognisable + 1  # within 2 frames of becoming recognisable
    track_ids = {t.track_id for d in decisions for t in d.tracks}
    assert len(track_ids) == 1
    _wait_quiet()
    events = site.events()
    assert len(events) == 1
    e = events[0]
    assert e.action == "OPEN" and e.person_id == "obama" and e.gate == "door-1"
    assert e.device == "cam-door-1" and e.kind == events_pb2.EVENT_KIND_FACE
    assert e.id == decisions[sent[0]].tracks[0].event_id
    assert e.end.ToNanoseconds() > e.start.ToNanoseconds()
    assert e.has_thumbnail and 0.0 <= e.liveness <= 1.0
    jpeg = site.search.GetEventImage(
        events_pb2.GetEventImageRequest(community="c1", event_id=e.id)
    ).jpeg
    assert jpeg[:3] == b"\xff\xd8\xff"


def test_a_decided_passage_carries_its_embedding_between_fresh_frames(
    site: Site, faces_dir: Path
) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    decisions = _stream(site, _passage(faces_dir, "examples_obama2.jpg"))
    sent = [i for i, d in enumerate(decisions) if d.action != capture_pb2.ACTION_NONE]
    assert [decisions[i].action for i in sent] == [capture_pb2.ACTION_OPEN]
    embedded = ["embed" in d.timings_ms for d in decisions]
    with_face = [bool(d.faces) for d in decisions]
    # Up to the decision every frame with a usable face is embedded afresh.
    recognised = [d.frame_action == capture_pb2.ACTION_OPEN for d in decisions]
    assert all(embedded[i] for i in range(sent[0] + 1) if recognised[i])
    after = range(sent[0] + 1, len(decisions))
    carried = [i for i in after if with_face[i] and not embedded[i]]
    assert len(carried) >= len(after) // 3, embedded
    for i in carried:  # a carried frame is still matched and reported
        face = decisions[i].faces[0]
        assert face.match.person_id == "obama" and face.match.accepted
        assert decisions[i].frame_action == capture_pb2.ACTION_OPEN
    # Each fresh embedding is lent to at most carry_frames later frames.
    fresh = sum(embedded)
    assert len(carried) <= site.engine.config.tracking.carry_frames * fresh, embedded
    _wait_quiet()
    events = site.events()
    assert len(events) == 1 and events[0].person_id == "obama"


def _with_newcomer(faces_dir: Path, frames: int, arrives: int) -> list[bytes]:
    """An Obama passage; from frame ``arrives`` on, a second person stands at the right edge."""
    newcomer = cv2.imread(str(faces_dir / "examples_biden.jpg"))
    h = 300
    newcomer = cv2.resize(newcomer, (int(newcomer.shape[1] * h / newcomer.shape[0]), h))
    out = []
    for i, jpeg in enumerate(_passage(faces_dir, "examples_obama2.jpg", frames=frames)):
        if i < arrives:
            out.append(jpeg)
            continue
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        frame[40 : 40 + h, 1270 - newcomer.shape[1] : 1270] = newcomer
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def test_a_decided_passage_is_searched_around_its_face_and_a_newcomer_is_still_seen(
    site: Site, faces_dir: Path
) -> None:
    region_frames = site.engine.config.tracking.region_frames
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    arrives = 16
    # One frame at a time (a gate at a low frame rate): each frame sees the one before it.
    decisions = stream_in_step(
        site.capture, _with_newcomer(faces_dir, frames=28, arrives=arrives), "door-1"
    )
    region = [not searched_whole_frame(dict(d.timings_ms)) for d in decisions]
    opened = next(i for i, d in enumerate(decisions) if d.action == capture_pb2.ACTION_OPEN)
    # The first frame is searched whole; then region_frames frames only around the face, then
    # the whole frame again, and so on (decided or not).
    pattern = [False] + ([True] * region_frames + [False]) * 8
    assert region[:arrives] == pattern[:arrives], region
    for i in range(opened + 1, arrives):  # the region finds the face, matched as before
        assert [f.match.person_id for f in decisions[i].faces] == ["obama"]
    # The newcomer, outside the region, is found by the next whole-frame search, within
    # region_frames frames of arriving; from then on the regions hold both faces.
    seen = next(i for i, d in enumerate(decisions) if i >= arrives and len(d.faces) == 2)
    assert seen <= arrives + region_frames and not region[seen], (seen, region)
    assert [len(d.faces) for d in decisions[seen:]] == [2] * (len(decisions) - seen)
    assert region[seen:] == pattern[: len(decisions) - seen], region
    # Frames embedded afresh after the decision take the liveness scored before it.
    scored = [i for i, d in enumerate(decisions) if "liveness" in d.timings_ms]
    refreshed = [i for i in range(opened + 1, arrives) if "embed" in decisions[i].timings_ms]
    assert refreshed and not set(refreshed) & set(scored), (refreshed, scored)
    assert {round(decisions[i].faces[0].liveness, 6) for i in refreshed} <= {
        round(decisions[i].faces[0].liveness, 6) for i in scored
    }


def test_a_region_search_in_flight_does_not_hide_a_newcomer_a_whole_frame_found(
    site: Site, faces_dir: Path
) -> None:
    """Frames of a gate are recognised in parallel: frame B may be offered a region search
    before frame A, which found a newcomer, is tracked. B (one face, region) must not then
    drop the newcomer from the gate's view: the next region searches hold both faces."""
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    arrives = 12
    frames = _with_newcomer(faces_dir, frames=20, arrives=arrives)
    engine, passages = site.engine, site.node.passages

    def recognise(i: int, carry: CarryOffer | None) -> FrameResult:
        return engine.process_frame("c1", frames[i], i * 0.1, carry=carry, gate="door-1")

    def offer(i: int) -> CarryOffer | None:
        return passages.carry_offer("c1", "door-1", i * 0.1)

    def next_region(i: int) -> CarryOffer:
        for _ in range(5):  # offers cycle: whole, then region_frames regions
            o = offer(i)
            if o is not None and o.region:
                return o
        raise AssertionError("no region search offered")

    for i in range(arrives - 1):  # one frame at a time: the passage decides
        passages.observe("c1", "door-1", "cam", i, i * 0.1, recognise(i, offer(i)))
    pending = next_region(arrives)
    # Frame `arrives` (the newcomer is there) and the next are in flight together.
    a = recognise(arrives, None)  # a whole-frame search: both faces
    b = recognise(arrives + 1, pending)  # offered before A was tracked: a region, one face
    assert len(a.faces) == 2
    assert not searched_whole_frame(b.timings_ms) and len(b.faces) == 1
    passages.observe("c1", "door-1", "cam", arrives, arrives * 0.1, a)
    passages.observe("c1", "door-1", "cam", arrives + 1, (arrives + 1) * 0.1, b)
    after = next_region(arrives + 2)
    assert after.view is not None and len(after.view.boxes) == 2
    found = recognise(arrives + 2, after)
    assert not searched_whole_frame(found.timings_ms) and len(found.faces) == 2


def _still_scene(faces_dir: Path, frames: int, arrives: int, resident: bool) -> list[bytes]:
    """A camera looking at a still scene (with Obama standing in it when ``resident``, his face
    changing a little from frame to frame), with sensor noise in every frame; from frame
    ``arrives`` on, a second person stands at the right edge."""
    rng = np.random.default_rng(7)
    if resident:
        photo = cv2.imread(str(faces_dir / "examples_obama2.jpg"))
        h = 420
        photo = cv2.resize(photo, (int(photo.shape[1] * h / photo.shape[0]), h))
        scene = composite(photo, 1280, 720, 200, 150)
    else:
        scene = np.full((720, 1280, 3), 110, np.uint8)
    newcomer = cv2.imread(str(faces_dir / "examples_biden.jpg"))
    h = 300
    newcomer = cv2.resize(newcomer, (int(newcomer.shape[1] * h / newcomer.shape[0]), h))
    out = []
    for i in range(frames):
        frame = scene.copy()
        if resident:  # his face (box ~[265, 239, 366, 369]) changes: not the scene
            face = frame[270:340, 285:345]
            face[:] = np.clip(face + 10.0 * (i % 5), 0, 255)
        if i >= arrives:
            frame[40 : 40 + h, 1270 - newcomer.shape[1] : 1270] = newcomer
        noisy = np.clip(frame + rng.normal(0, 4.0, frame.shape), 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def _run_frames(site: Site, frames: list[bytes], dt: float = 0.1) -> list[FrameResult]:
    """The gate's frames one at a time at ``dt`` seconds apart, as the node does them."""
    engine, passages = site.engine, site.node.passages
    if not engine.registry.has_community("c1"):
        engine.registry.create_community("c1")
    out = []
    for i, jpeg in enumerate(frames):
        offer = passages.carry_offer("c1", "door-1", i * dt)
        result = engine.process_frame("c1", jpeg, i * dt, carry=offer, gate="door-1")
        passages.observe("c1", "door-1", "cam", i, i * dt, result)
        out.append(result)
    return out


def test_a_still_scene_skips_whole_frame_searches_until_something_comes_into_view(
    site: Site, faces_dir: Path
) -> None:
    tracking = site.engine.config.tracking
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    arrives = 14
    results = _run_frames(site, _still_scene(faces_dir, 24, arrives, resident=True))
    whole = [searched_whole_frame(r.timings_ms) for r in results]
    # Whole-frame searches were due at frames 4, 8 and 12 (every region_frames + 1); nothing
    # moved, so only the one at 1.2 s, when the sketch from frame 0 was older than
    # still_scene_max_age_s, ran. The face was found, and matched, in every frame.
    assert tracking.region_frames == 3 and tracking.still_scene_max_age_s == 1.0
    assert [i for i in range(arrives) if whole[i]] == [0, 12], whole
    assert all("still" in results[i].timings_ms for i in (4, 8, 12))
    for r in results[:arrives]:
        ids = [m.identification.person for m in r.faces if m.identification]
        assert [p.person_id for p in ids if p is not None] == ["obama"]
    # The newcomer, outside the region, changes the sketch: the next due search runs whole
    # and finds it, within region_frames frames.
    seen = next(i for i, r in enumerate(results) if len(r.faces) == 2)
    assert arrives <= seen <= arrives + tracking.region_frames and whole[seen], (seen, whole)
    assert all(len(r.faces) == 2 for r in results[seen:])


def test_an_empty_still_scene_is_not_searched_and_a_face_coming_in_is_seen_at_once(
    site: Site, faces_dir: Path
) -> None:
    arrives = 14
    results = _run_frames(site, _still_scene(faces_dir, 18, arrives, resident=False))
    searched = [WHOLE_FRAME_STAGE in r.timings_ms for r in results]
    # The gate's first frame is searched and sketched; then nothing is searched while nothing
    # changes, except once the sketch is older than still_scene_max_age_s (frame 11, 1.1 s).
    assert [i for i in range(arrives) if searched[i]] == [0, 11], searched
    assert all(not r.faces for r in results[:arrives])
    # The person coming in changes the sketch: found in the very frame they appear in.
    assert searched[arrives] and len(results[arrives].faces) == 1
    assert all(len(r.faces) == 1 for r in results[arrives:])


def test_with_still_scenes_off_every_due_whole_frame_search_runs(
    face_analyzer,
    plate_reader,
    base_config: Config,
    tmp_path: Path,
    faces_dir: Path,  # type: ignore[no-untyped-def]
) -> None:
    config = _config(base_config, tmp_path)
    config = replace(config, tracking=replace(config.tracking, still_scene_diff=0.0))
    registry = FaceRegistry(tmp_path, face_analyzer.embedder.dim)
    site = Site(Engine(config, face_analyzer, registry, plate_reader))
    try:
        results = _run_frames(site, _still_scene(faces_dir, 10, 99, resident=True))
    finally:
        site.close()
    whole = [searched_whole_frame(r.timings_ms) for r in results]
    assert [i for i, w in enumerate(whole) if w] == [0, 4, 8], whole
    assert not any("still" in r.timings_ms for r in results)


def test_frames_queued_past_the_quiet_time_stay_in_their_passage(
    site: Site, faces_dir: Path
) -> None:
    """A node past saturation observes frames seconds after they came. The expiry thread runs
    meanwhile; the passage must not end while its next frames wait (and be decided again)."""
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    passages, t0 = site.node.passages, time.time()
    frames = _passage(faces_dir, "examples_obama2.jpg", frames=6)
    times = [t0 + 0.1 * i for i in range(len(frames))]
    for t in times:
        passages.received("c1", "door-1", t)
    results = [site.engine.process_frame("c1", f, t) for f, t in zip(frames, times, strict=True)]
    decided = []
    for i, (t, result) in enumerate(zip(times, results, strict=True)):
        assert passages.expire(t0 + 5.0 + i) == 0  # 5 s behind, far past quiet_s
        outcome = passages.observe("c1", "door-1", "cam", i, t, result)
        decided += [s.track_id for s in outcome.tracks if s.decided_now]
    assert len(decided) == 1
    assert passages.frames_in_flight() == 0
    _wait_quiet()
    (event,) = site.events()
    assert event.action == "OPEN" and event.person_id == "obama"


def test_a_frame_that_is_never_observed_does_not_hold_its_passage_open(
    site: Site, faces_dir: Path
) -> None:
    site.engine.registry.create_community("c1")
    passages, t0 = site.node.passages, time.time()
    (frame,) = _passage(faces_dir, "examples_obama2.jpg", frames=1)
    result = site.engine.process_frame("c1", frame, t0)
    for gate in ("door-1", "door-2"):
        passages.received("c1", gate, t0)
        passages.observe("c1", gate, "cam", 0, t0, result)
        passages.received("c1", gate, t0 + 0.1)  # in flight, and never observed
    assert passages.expire(t0 + 5.0) == 0
    passages.abandoned("c1", "door-1", t0 + 0.1)  # shed, say: door-1's passage ends
    _wait_quiet()
    assert [e.gate for e in site.events()] == ["door-1"]
    # door-2's frame was lost without a word (its stream cut): given up after a track's
    # longest life.
    assert passages.expire(t0 + 0.1 + site.engine.config.tracking.max_track_age_s + 1) == 1
    assert passages.frames_in_flight() == 0


def test_a_stranger_passage_is_embedded_every_frame_but_lends_its_liveness(
    site: Site, faces_dir: Path
) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    decisions = _stream(
        site, _passage(faces_dir, "examples_knn_examples_train_kit_harington_john1.jpeg", frames=16)
    )
    sent = [i for i, d in enumerate(decisions) if d.action != capture_pb2.ACTION_NONE]
    assert [decisions[i].action for i in sent] == [capture_pb2.ACTION_STRANGER]
    usable = [i for i, d in enumerate(decisions) if d.faces and d.faces[0].quality.usable]
    assert all("embed" in decisions[i].timings_ms for i in usable)  # never an embedding lent
    lent = [i for i in usable if i > sent[0] and "liveness" not in decisions[i].timings_ms]
    assert lent, "no frame after the decision reused the liveness score"
    scored = {round(d.faces[0].liveness, 6) for d in decisions if "liveness" in d.timings_ms}
    assert all(round(decisions[i].faces[0].liveness, 6) in scored for i in lent)


def test_without_carrying_every_frame_is_embedded(
    face_analyzer, plate_reader, base_config: Config, tmp_path: Path, faces_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    config = _config(base_config, tmp_path)
    config = replace(config, tracking=replace(config.tracking, carry_frames=0))
    engine = Engine(
        config, face_analyzer, FaceRegistry(tmp_path, face_analyzer.embedder.dim), plate_reader
    )
    s = Site(engine)
    try:
        s.registry = registry_pb2_grpc.RegistryStub(s.channel)  # type: ignore[attr-defined]
        _enroll(s, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
        decisions = _stream(s, _passage(faces_dir, "examples_obama2.jpg", frames=12))
        assert all("embed" in d.timings_ms for d in decisions if d.frame_action)
    finally:
        s.close()


def test_a_resident_watch_listed_in_view_is_alerted_on_the_next_fresh_frame(
    site: Site, faces_dir: Path
) -> None:
    """Carried frames never vote, so a decided passage escalates on its next frame embedded
    afresh: at most ``tracking.carry_frames`` frames after the watchlist changed."""
    carry_frames = site.engine.config.tracking.carry_frames
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    listed_at: list[int] = []

    def list_after_the_decision(i: int, decisions: list[capture_pb2.Decision]) -> None:
        if listed_at or not any(d.action == capture_pb2.ACTION_OPEN for d in decisions):
            return
        site.registry.EnrollPerson(  # type: ignore[attr-defined]
            registry_pb2.EnrollPersonRequest(
                community="c1",
                person_id="obama",
                role=common_pb2.ROLE_WATCHLIST,
                images=[(faces_dir / "examples_obama.jpg").read_bytes()],
                replace=True,
            )
        )
        listed_at.append(i)

    decisions = stream_in_step(
        site.capture,
        _passage(faces_dir, "examples_obama2.jpg", frames=24),
        "door-1",
        before=list_after_the_decision,
    )
    listed = listed_at[0]
    sent = [(i, d.action) for i, d in enumerate(decisions) if d.action != capture_pb2.ACTION_NONE]
    fresh = [i for i, d in enumerate(decisions) if i >= listed and "embed" in d.timings_ms]
    # OPEN, then ALERT on the first frame embedded afresh after the listing, no sooner: the
    # frames between carried the embedding from before, matched (and reported) as watch-listed,
    # but they do not vote.
    assert sent == [(sent[0][0], capture_pb2.ACTION_OPEN), (fresh[0], capture_pb2.ACTION_ALERT)]
    assert fresh[0] - listed <= carry_frames, (listed, fresh)
    for d in decisions[listed : fresh[0]]:
        assert d.faces[0].match.person_id == "obama"
        assert d.faces[0].match.role == common_pb2.ROLE_WATCHLIST


def test_watchlist_alert_is_pushed_as_it_happens_and_resumes(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "biden", "examples_biden.jpg", common_pb2.ROLE_WATCHLIST)
    received: list[events_pb2.Alert] = []
    stream = site.search.WatchAlerts(events_pb2.WatchAlertsRequest(community="c1"))

    def follow() -> None:
        try:
            for alert in stream:
                received.append(alert)
        except grpc.RpcError as exc:  # cancelled below
            assert exc.code() == grpc.StatusCode.CANCELLED

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    decisions = _stream(
        site, _passage(faces_dir, "examples_knn_examples_train_biden_biden2.jpg", frames=6)
    )
    assert decisions[0].action == capture_pb2.ACTION_ALERT  # no waiting for a second vote
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    stream.cancel()
    assert received and received[0].kind == events_pb2.ALERT_KIND_WATCHLIST
    assert received[0].person_id == "biden"
    # A second passage while nobody listens; resuming after the last seen seq gets it.
    _wait_quiet()
    _stream(site, _passage(faces_dir, "examples_biden.jpg", frames=4), gate="door-2")
    _wait_quiet()
    resumed = site.search.WatchAlerts(
        events_pb2.WatchAlertsRequest(community="c1", after_seq=received[-1].seq)
    )
    first = next(iter(resumed))
    resumed.cancel()
    assert first.seq > received[-1].seq and first.gate == "door-2"


def test_strangers_link_across_passages_and_trajectory(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    _stream(
        site,
        _passage(faces_dir, "examples_knn_examples_train_kit_harington_john1.jpeg", frames=8),
        gate="door-1",
    )
    _wait_quiet()
    _stream(
        site,
        _passage(
            faces_dir, "examples_knn_examples_train_kit_harington_john2.jpeg", frames=8, seed=3
        ),
        gate="door-2",
    )
    _wait_quiet()
    events = site.events(action="STRANGER")
    assert len(events) == 2
    stranger = {e.stranger_id for e in events}
    assert len(stranger) == 1 and stranger != {""}
    trajectory = site.search.Trajectory(
        events_pb2.TrajectoryRequest(stranger_id=events[0].stranger_id)
    )
    assert [e.gate for e in trajectory.events] == ["door-1", "door-2"]
    # Seen more than once (stranger_repeat_n=1): an alert.
    alerts = list(site.node.events.store.alerts_after("c1", 0))
    assert any(a.kind == "stranger_repeat" for a in alerts)


def test_tailgating_raises_an_alert(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    resident = _passage(faces_dir, "examples_obama2.jpg", frames=6)
    follower = _passage(faces_dir, "examples_lin-manuel-miranda.png", frames=6)
    _stream(site, resident + follower, gate="door-1")
    _wait_quiet()
    kinds = [a.kind for a in site.node.events.store.alerts_after("c1", 0)]
    assert "tailgating" in kinds
    assert len(site.events()) == 2


def test_vehicle_passage_is_one_plate_event(site: Site, plates_dir: Path) -> None:
    site.registry.AddVehicle(
        registry_pb2.AddVehicleRequest(  # type: ignore[attr-defined]
            community="c1", plate="皖A0N718"
        )
    )
    scene = cv2.imread(str(plates_dir / "scenes" / "ccpd_00.jpg"))
    frames = passage_frames(
        scene, PassageSpec(frames=10, width=1280, height=1280, start_scale=0.8, end_scale=0.9)
    )
    decisions = _stream(site, frames, gate="barrier", lane=capture_pb2.LANE_KIND_VEHICLE)
    assert [d.action for d in decisions if d.action != capture_pb2.ACTION_NONE] == [
        capture_pb2.ACTION_OPEN
    ]
    _wait_quiet()
    events = site.events(kind=events_pb2.EVENT_KIND_PLATE)
    assert len(events) == 1 and events[0].plate == "皖A0N718" and events[0].role == "resident"
    by_plate = site.search.Trajectory(events_pb2.TrajectoryRequest(plate="皖A0N718"))
    assert len(by_plate.events) == 1


def test_restart_mid_passage_loses_and_duplicates_nothing(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    frames = _passage(faces_dir, "examples_obama2.jpg", frames=10)
    _stream(site, frames[:5])
    site = site.restart()  # a graceful restart ends the open passage and records it
    try:
        assert len(site.events()) == 1
        _stream(site, frames[5:], first_seq=5)
        _wait_quiet()
        events = site.events()
        assert len(events) == 2  # the passage before and the one after the restart
        assert len({e.id for e in events}) == 2
    finally:
        site.close()


def test_duplicated_and_late_frames_change_nothing(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    frames = _passage(faces_dir, "examples_obama2.jpg", frames=6)
    order = [0, 1, 1, 2, 0, 3, 4, 5, 5]
    sent = (capture_pb2.Frame(community="c1", gate="door-1", seq=i, image=frames[i]) for i in order)
    decisions = list(site.capture.Stream(sent, timeout=60))
    assert len(decisions) == len(order)
    assert sum(d.action == capture_pb2.ACTION_OPEN for d in decisions) == 1
    _wait_quiet()
    assert len(site.events()) == 1


def test_queries_validate_their_arguments(site: Site) -> None:
    with pytest.raises(grpc.RpcError) as err:
        site.search.QueryEvents(events_pb2.QueryEventsRequest(community="nowhere"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    site.engine.registry.create_community("c1")
    with pytest.raises(grpc.RpcError) as err:
        site.search.QueryEvents(events_pb2.QueryEventsRequest(community="c1", action="MAYBE"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        site.search.QueryEvents(events_pb2.QueryEventsRequest(community="c1", page_token="junk"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        site.search.GetEventImage(events_pb2.GetEventImageRequest(community="c1", event_id="abc"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_passages_reach_redis_and_survive_a_redis_outage(
    face_analyzer, plate_reader, base_config: Config, tmp_path: Path, faces_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    import redis
    from redis_server import RedisServer

    with RedisServer() as server:
        config = _config(base_config, tmp_path, redis_url=server.url)
        engine = Engine(config, face_analyzer, FaceRegistry(tmp_path, 512), plate_reader)
        site = Site(engine)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            site.engine.registry.create_community("c1")
            _stream(site, _passage(faces_dir, "examples_biden.jpg", frames=5), gate="door-1")
            _wait_quiet()
            site.node.events.writer.flush(5)
            assert site.node.events.publisher is not None
            site.node.events.publisher.flush(10)
            first = [f["id"] for _, f in client.xrange("smartgate:c1:events")]
            assert len(first) == 1
            server.stop()
            _stream(site, _passage(faces_dir, "examples_obama2.jpg", frames=5), gate="door-2")
            _wait_quiet()
            assert len(site.events()) == 2  # stored locally while Redis is down
            server.restart()  # a fresh, empty Redis (no persistence) on the same port
            assert site.node.events.publisher.flush(15)
            ids = [f["id"] for _, f in client.xrange("smartgate:c1:events")]
            stored = {e.id for e in site.events()}
            assert ids == list(stored - set(first))  # the queued passage, delivered once
        finally:
            client.close()
            site.close()


def test_snapshot_frames_are_passages_of_their_own(site: Site, faces_dir: Path) -> None:
    """Capture.Submit (snapshot cameras, no device id here): each frame is one passage."""
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", common_pb2.ROLE_RESIDENT)
    photo = (faces_dir / "examples_obama2.jpg").read_bytes()
    for seq in range(2):
        d = site.capture.Submit(
            capture_pb2.Frame(community="c1", gate="kiosk", seq=seq, image=photo)
        )
        assert d.action == capture_pb2.ACTION_OPEN
    events = site.events(gate="kiosk")
    assert len(events) == 2 and {e.device for e in events} == {"unknown"}
    assert all(e.person_id == "obama" and e.has_thumbnail for e in events)
