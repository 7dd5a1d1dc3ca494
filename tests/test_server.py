"""The studio server over real uvicorn on loopback, with aiortc as the client peer.

A tiny real model renders catalog looks chosen by the prompt, so every check is
"the pixels that came back are the look applied to the pixels that were sent".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import aioice.ice
import aiortc  # declared dependencies: a broken install fails here, it does not skip
import av
import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.codecs.vpx import Vp8Encoder

from mirage_lsd.engine.stats import StatsRecorder
from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.errors import UserError
from mirage_lsd.looks.catalog import _CATALOG, render_look
from mirage_lsd.models.base import Conditioning, ModelInfo, State, StreamModel
from mirage_lsd.server.app import create_app
from mirage_lsd.server.sessions import SessionManager
from mirage_lsd.server.settings import LiveParams, ServerSettings, ice_configuration
from mirage_lsd.server.tracks import NewestFrameSlot, TransformTrack

LOOKS = ("night_vision", "sunset", "underwater")


class LookModel(StreamModel):
    """Prompt -> catalog look (by name or description) -> `render_look`; no look: identity."""

    def __init__(self) -> None:
        self._info = ModelInfo("test-looks", "renders catalog looks", looks=LOOKS)
        self._phrases = {
            phrase.lower(): look.name
            for look in _CATALOG
            if look.name in LOOKS
            for phrase in (look.name.replace("_", " "), *look.descriptions)
        }

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode_prompt(self, text: str | None) -> Conditioning:
        return None if text is None else self._phrases.get(text.strip().lower())

    def mix_prompts(self, a: Conditioning, b: Conditioning, weight: float) -> Conditioning:
        return b if weight >= 0.5 else a

    def init_state(self, height: int, width: int, seed: int | None = None) -> State:
        return None

    def step(
        self, image: np.ndarray, cond: Conditioning, state: State, steps: int
    ) -> tuple[np.ndarray, State]:
        return (image if cond is None else render_look(cond, image)), state


@pytest.fixture(scope="module")
def still(media: Path) -> np.ndarray:
    """One 320x240 RGB frame of walk.mkv, the picture the client camera sends."""
    with av.open(str(media / "walk.mkv")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))


@dataclass
class Running:
    url: str
    app: object

    @property
    def manager(self) -> SessionManager:
        return self.app.state.manager  # type: ignore[attr-defined,no-any-return]

    @property
    def token(self) -> str | None:
        return self.app.state.settings.token  # type: ignore[attr-defined]


@contextlib.contextmanager
def running_server(settings: ServerSettings, model: StreamModel | None = None) -> Iterator[Running]:
    """A real uvicorn server on a free port of 127.0.0.1. A `settings.host` beyond
    loopback (0.0.0.0) is what the server's guards read; the test listens on loopback
    only all the same."""
    app = create_app(settings, model or LookModel())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    # the tests open sessions back to back: the creation rate is tested on its own server
    settings = ServerSettings(max_sessions=2, control_burst=5, session_rate_per_s=50.0)
    with running_server(settings) as running:
        yield running


class StillTrack(VideoStreamTrack):
    """A camera that films one still picture at 30 fps."""

    def __init__(self, image: np.ndarray) -> None:
        super().__init__()
        self.image = image

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class Receiver:
    """Keeps the newest frame of a remote track."""

    def __init__(self) -> None:
        self.frames = 0
        self.latest: np.ndarray | None = None
        self.got_frame = asyncio.Event()

    def attach(self, track: aiortc.MediaStreamTrack) -> None:
        async def run() -> None:
            with contextlib.suppress(aiortc.mediastreams.MediaStreamError):
                while True:
                    frame = await track.recv()
                    self.latest = frame.to_ndarray(format="rgb24")
                    self.frames += 1
                    self.got_frame.set()

        self.task = asyncio.ensure_future(run())

    async def frame_after(self, count: int, timeout: float = 20.0) -> np.ndarray:
        """The newest frame once more than `count` frames arrived."""
        deadline = time.monotonic() + timeout
        while self.frames <= count:
            assert time.monotonic() < deadline, f"no video: {self.frames} frames arrived"
            await asyncio.sleep(0.05)
        assert self.latest is not None
        return self.latest


def matches(out: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute difference after resizing to the expected size (codec loss ~ a few levels)."""
    if out.shape != expected.shape:
        out = cv2.resize(out, expected.shape[1::-1], interpolation=cv2.INTER_AREA)
    return float(np.abs(out.astype(np.float32) - expected.astype(np.float32)).mean())


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def client_peer() -> RTCPeerConnection:
    """A test client peer that asks no STUN server (aiortc's default asks Google's)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def ice_complete(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


# -- WebRTC session with control over the data channel ---------------------------------------
def test_session_transforms_and_follows_prompt(server: Running, still: np.ndarray) -> None:
    async def run() -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        channel = pc.createDataChannel("control")
        replies: asyncio.Queue[dict] = asyncio.Queue()
        channel.on("message", lambda m: replies.put_nowait(json.loads(m)))
        receiver = Receiver()
        pc.on("track", receiver.attach)
        sdp = await ice_complete(pc)
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = {"sdp": sdp, "type": "offer", "prompt": "night vision", "steps": 1}
            r = await http.post("/api/sessions", json=body)
            assert r.status_code == 200, r.text
            answer = r.json()
            sid = answer["session_id"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

            # 1. frames come back as the night-vision look of the still
            out = await receiver.frame_after(3)
            night = render_look("night_vision", still)
            assert matches(out, night) < 12 < matches(out, still)

            # 2. the data channel changes the prompt; the output follows
            await wait_until(lambda: channel.readyState == "open")
            channel.send(json.dumps({"type": "params", "prompt": "sunset", "transition_frames": 0}))
            ack = await asyncio.wait_for(replies.get(), 5)
            assert ack == {"type": "ack", "prompt": "sunset", "strength": 1.0, "seed": None}
            sunset = render_look("sunset", still)
            seen = receiver.frames
            await wait_until(
                lambda: matches(receiver.latest, sunset) < 12 and receiver.frames > seen
            )

            # 3. so does REST, and stats and the listing tell the story
            r = await http.post(f"/api/sessions/{sid}/prompt", json={"prompt": "underwater"})
            assert r.status_code == 200 and r.json()["prompt"] == "underwater"
            underwater = render_look("underwater", still)
            await wait_until(lambda: matches(receiver.latest, underwater) < 12)
            # strength 0 shows the input, strength 1 the look again; the prompt stays
            r = await http.post(f"/api/sessions/{sid}/prompt", json={"strength": 0.0, "seed": 5})
            assert r.json() == {"id": sid, "prompt": "underwater", "strength": 0.0, "seed": 5}
            await wait_until(lambda: matches(receiver.latest, still) < 12)
            channel.send(json.dumps({"type": "params", "strength": 1.0}))
            assert (await asyncio.wait_for(replies.get(), 5))["strength"] == 1.0
            await wait_until(lambda: matches(receiver.latest, underwater) < 12)
            r = await http.post(f"/api/sessions/{sid}/prompt", json={"strength": 1.5})
            assert r.status_code == 422
            channel.send(json.dumps({"type": "stats"}))
            stats = (await asyncio.wait_for(replies.get(), 5))["stats"]
            assert stats["frames_out"] >= 3 and stats["ttff_ms"] > 0
            assert stats["latency_ms"]["p50"] > 0 and 0 <= stats["drop_ratio"] < 1
            r = await http.get(f"/api/sessions/{sid}/stats")
            assert r.json()["frames_in"] >= stats["frames_in"]
            listing = (await http.get("/api/sessions")).json()
            assert [s["id"] for s in listing] == [sid] and listing[0]["prompt"] == "underwater"

            # 4. bad control messages get one clear error each
            channel.send("not json")
            assert (await asyncio.wait_for(replies.get(), 5))["type"] == "error"

            # 5. DELETE ends it
            assert (await http.delete(f"/api/sessions/{sid}")).status_code == 204
            assert (await http.get("/api/sessions")).json() == []
            assert (await http.get(f"/api/sessions/{sid}/stats")).status_code == 404
        await pc.close()

    asyncio.run(run())


def test_closed_peer_frees_its_session(server: Running, still: np.ndarray) -> None:
    async def run() -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        receiver = Receiver()
        pc.on("track", receiver.attach)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
            await receiver.frame_after(1)
            assert len(server.manager.sessions) == 1
            sid = r.json()["session_id"]
            assert any(t.name.startswith(f"mirage-model-{sid}") for t in threading.enumerate())
            await pc.close()  # like a closed tab: DTLS close, no DELETE
            await wait_until(lambda: not server.manager.sessions, timeout=15)
            # its model and prompt threads end too
            await wait_until(lambda: all(sid not in t.name for t in threading.enumerate()))

    asyncio.run(run())


# -- WHIP in, WHEP out --------------------------------------------------------------------------
def test_whip_publish_is_transformed_and_watchable_over_whep(
    server: Running, still: np.ndarray
) -> None:
    async def run() -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")  # like OBS: drained
        viewer = client_peer()
        viewer.addTransceiver("video", direction="recvonly")
        receiver = Receiver()
        viewer.on("track", receiver.attach)
        sdp_headers = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post(
                "/whip?prompt=night%20vision",
                content=await ice_complete(publisher),
                headers=sdp_headers,
            )
            assert r.status_code == 201, r.text
            assert r.headers["content-type"].startswith("application/sdp")
            location = r.headers["location"]
            sid = location.rsplit("/", 1)[1]
            assert location == f"/whip/{sid}"
            await publisher.setRemoteDescription(RTCSessionDescription(r.text, "answer"))

            r = await http.post(
                f"/whep/{sid}", content=await ice_complete(viewer), headers=sdp_headers
            )
            assert r.status_code == 201, r.text
            viewer_location = r.headers["location"]
            await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            out = await receiver.frame_after(3)
            assert matches(out, render_look("night_vision", still)) < 12

            assert (await http.patch(location)).status_code == 405
            assert (await http.delete(viewer_location)).status_code == 200
            assert (await http.delete(location)).status_code == 200
            assert (await http.get("/api/sessions")).json() == []
            r = await http.post(f"/whep/{sid}", content="v=0", headers=sdp_headers)
            assert r.status_code == 404
        await publisher.close()
        await viewer.close()

    asyncio.run(run())


# -- limits --------------------------------------------------------------------------------------
def test_busy_beyond_max_sessions(server: Running, still: np.ndarray) -> None:
    async def run() -> None:
        peers = [client_peer() for _ in range(3)]
        async with httpx.AsyncClient(base_url=server.url) as http:
            codes = []
            for pc in peers:
                pc.addTrack(StillTrack(still))
                r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
                codes.append(r.status_code)
            assert codes == [200, 200, 503]
            assert "busy" in r.json()["detail"] and "try later" in r.json()["detail"]
            assert r.headers["retry-after"]
            for s in (await http.get("/api/sessions")).json():
                await http.delete(f"/api/sessions/{s['id']}")
        for pc in peers:
            await pc.close()

    asyncio.run(run())


def test_sessions_opened_in_a_loop_are_rate_limited(still: np.ndarray) -> None:
    """One slot: Stop then Start at once (or an encoder reconnecting) is no loop."""

    async def run(server: Running) -> None:
        async with httpx.AsyncClient(base_url=server.url) as http:
            codes = []
            for _ in range(4):  # open and close: never busy, but work for the server each time
                pc = client_peer()
                pc.addTrack(StillTrack(still))
                r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
                codes.append(r.status_code)
                if r.status_code == 200:
                    await http.delete(f"/api/sessions/{r.json()['session_id']}")
                await pc.close()
            assert codes == [200, 200, 200, 429]  # a burst of max_sessions + 2, then the rate
            assert r.json()["detail"] == "too many new sessions: slow down"
            assert r.headers["retry-after"] and server.manager.sessions == {}

    settings = ServerSettings(max_sessions=1, session_rate_per_s=0.01)
    with running_server(settings, LookModel()) as server:
        asyncio.run(run(server))


def test_busy_beyond_max_viewers(still: np.ndarray) -> None:
    async def run(server: Running) -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        viewers = [client_peer() for _ in range(2)]
        sdp = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            assert r.status_code == 201, r.text
            sid = r.headers["location"].rsplit("/", 1)[1]
            codes = []
            for viewer in viewers:
                viewer.addTransceiver("video", direction="recvonly")
                offer = await ice_complete(viewer)
                codes.append(
                    (await http.post(f"/whep/{sid}", content=offer, headers=sdp)).status_code
                )
            assert codes == [201, 503]
            await http.delete(f"/whip/{sid}")
        for pc in (publisher, *viewers):
            await pc.close()

    with running_server(ServerSettings(max_viewers=1), LookModel()) as server:
        asyncio.run(run(server))


def test_requests_are_limited(server: Running, still: np.ndarray) -> None:
    with httpx.Client(base_url=server.url) as http:
        # body size, content type, origin, host (DNS rebinding), unknown session
        sdp, text = {"Content-Type": "application/sdp"}, {"Content-Type": "text/plain"}
        assert http.post("/whip", content="x" * 100_000, headers=sdp).status_code == 413
        assert http.post("/whip", content="v=0", headers=text).status_code == 415
        chunked = iter([b"x" * 40_000] * 3)  # no Content-Length: counted as it streams in
        assert http.post("/whip", content=chunked, headers=sdp).status_code == 413
        evil = {"Origin": "http://evil.example"}
        assert http.get("/api/sessions", headers=evil).status_code == 403
        assert http.get("/api/sessions", headers={"Origin": server.url}).status_code == 200
        assert http.get("/api/sessions", headers={"Host": "evil.example"}).status_code == 403
        for bad in ("[", "x]", "[zz]"):  # no traceback in the log, before any auth
            assert raw_status(server.url, f"GET /api/sessions HTTP/1.1\r\nHost: {bad}") == 400
        assert http.post("/api/sessions/nope/prompt", json={"prompt": "x"}).status_code == 404
        assert http.post("/api/sessions", json={"sdp": "v=0", "steps": 99}).status_code == 422
        # within the schema's 50 but over this server's --max-steps (4): the server's check
        over = http.post("/api/sessions", json={"sdp": "v=0", "steps": 5})
        assert over.status_code == 422 and "at most 4" in over.json()["detail"]
        over = http.post("/whip?steps=5", content="v=0", headers=sdp)
        assert over.status_code == 422 and "at most 4" in over.json()["detail"]

    async def run() -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            sid = r.json()["session_id"]
            url = f"/api/sessions/{sid}/prompt"
            assert (await http.post(url, json={"prompt": "x" * 501})).status_code == 422
            assert (await http.post(url, json={"prompt": "   "})).status_code == 422
            sunset = {"prompt": "sunset"}
            # sent at once, so the 10 per second refill cannot keep up however slow the machine
            replies = await asyncio.gather(*(http.post(url, json=sunset) for _ in range(12)))
            codes = [reply.status_code for reply in replies]
            assert 429 in codes and 200 in codes  # burst of 5 (2 spent above), then 10 per second
            await http.delete(f"/api/sessions/{sid}")
        await pc.close()

    asyncio.run(run())


class FailingEncoder(LookModel):
    """A model whose text encoder fails (out of memory, say) on one prompt."""

    def encode_prompt(self, text: str | None) -> Conditioning:
        if text == "explode":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().encode_prompt(text)


def test_a_prompt_the_encoder_fails_on_is_one_line_and_changes_nothing(
    still: np.ndarray,
) -> None:
    """Not a 500 with a traceback, nor a data channel message left unanswered: the
    reason in one line, and the strength sent with the prompt not half-applied."""

    async def run(url: str) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        channel = pc.createDataChannel("control")
        replies: asyncio.Queue[dict] = asyncio.Queue()
        channel.on("message", lambda m: replies.put_nowait(json.loads(m)))
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            answer = r.json()
            sid = answer["session_id"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            prompt = f"/api/sessions/{sid}/prompt"
            r = await http.post(prompt, json={"prompt": "explode", "strength": 0.5})
            oom = "prompt not applied: CUDA out of memory. Tried to allocate 2.00 GiB"
            assert r.status_code == 422 and r.json()["detail"] == oom
            r = await http.post(prompt, json={"seed": 3})
            assert r.json() == {"id": sid, "prompt": None, "strength": 1.0, "seed": 3}
            await wait_until(lambda: channel.readyState == "open")
            channel.send(json.dumps({"type": "params", "prompt": "explode", "strength": 0.2}))
            reply = await asyncio.wait_for(replies.get(), 5)
            assert reply["type"] == "error"
            assert reply["error"].startswith("prompt not applied: CUDA out of memory")
            channel.send(json.dumps({"type": "params", "prompt": "sunset"}))
            ack = await asyncio.wait_for(replies.get(), 5)
            assert ack == {"type": "ack", "prompt": "sunset", "strength": 1.0, "seed": 3}
            await http.delete(f"/api/sessions/{sid}")
        await pc.close()

    with running_server(ServerSettings(), FailingEncoder()) as server:
        asyncio.run(run(server.url))


def raw_status(url: str, head: str) -> int:
    """The status code a server answers a hand-written request head with (what a client
    library would refuse to send)."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(f"{head}\r\nConnection: close\r\n\r\n".encode())
        return int(conn.recv(64).split(b" ")[1])


def test_token_required_beyond_loopback() -> None:
    settings = ServerSettings(host="0.0.0.0")
    with running_server(settings) as running, httpx.Client(base_url=running.url) as http:
        token = running.token
        assert token and len(token) >= 16  # generated, since none was given
        assert http.get("/api/sessions").status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(token)}
        assert http.get("/api/sessions", headers=wrong).status_code == 401
        sdp = {"Content-Type": "application/sdp"}
        assert http.post("/whip", content="v=0", headers=sdp).status_code == 401
        assert http.post("/whep/any", content="v=0", headers=sdp).status_code == 401
        assert http.post("/api/sessions", json={"sdp": "v=0"}).status_code == 401
        good = {"Authorization": f"Bearer {token}"}
        assert http.get("/api/sessions", headers=good).json() == []
        assert http.get("/api/config", headers=good).json()["looks"][0]["name"] == LOOKS[0]
        assert http.get("/").status_code == 200  # the page itself carries no secret


# -- other origins: WHIP/WHEP players ----------------------------------------------------------
PLAYER = "https://player.example"


def preflight(http: httpx.Client, path: str, origin: str) -> httpx.Response:
    """What a browser sends before a cross-origin POST with a token and an SDP body."""
    return http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_allowed_origins_may_use_whip_and_whep_with_the_token(still: np.ndarray) -> None:
    token = "t" * 24
    settings = ServerSettings(token=token, extra_origins=(PLAYER + ":443",))  # normalized

    async def publish_and_watch(server: Running) -> None:
        publisher, viewer = client_peer(), client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        viewer.addTransceiver("video", direction="recvonly")
        from_player = {"Origin": PLAYER, "Content-Type": "application/sdp"}
        with_token = {**from_player, "Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=from_player)
            assert r.status_code == 401  # the preflight passes without it, the request not
            assert r.headers["access-control-allow-origin"] == PLAYER  # the page reads why
            r = await http.post("/whip", content=await ice_complete(publisher), headers=with_token)
            assert r.status_code == 201, r.text
            assert r.headers["access-control-allow-origin"] == PLAYER
            assert r.headers["access-control-expose-headers"] == "Location"
            location = r.headers["location"]
            sid = location.rsplit("/", 1)[1]
            r = await http.post(
                f"/whep/{sid}", content=await ice_complete(viewer), headers=with_token
            )
            assert r.status_code == 201, r.text
            assert r.headers["access-control-allow-origin"] == PLAYER
            assert r.headers["access-control-expose-headers"] == "Location"
            assert r.headers["location"].startswith(f"/whep/{sid}/")
            r = await http.delete(location, headers=with_token)
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == PLAYER
        await publisher.close()
        await viewer.close()

    with running_server(settings) as server, httpx.Client(base_url=server.url) as http:
        for path in ("/whip", "/whep/some-session", "/whip/some-session"):
            r = preflight(http, path, PLAYER)
            assert r.status_code == 204, (path, r.text)
            assert r.headers["access-control-allow-origin"] == PLAYER
            assert r.headers["access-control-allow-methods"] == "POST, PATCH, DELETE, OPTIONS"
            assert r.headers["access-control-allow-headers"] == "Authorization, Content-Type"
            assert r.headers["access-control-expose-headers"] == "Location"
            assert r.headers["vary"] == "Origin"
        r = preflight(http, "/whep/some-session", "https://evil.example")
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        # the studio's own API stays same-origin, token or not
        bearer = {"Authorization": f"Bearer {token}"}
        r = http.get("/api/sessions", headers={"Origin": PLAYER, **bearer})
        assert r.status_code == 403 and "only WHIP and WHEP" in r.json()["detail"]
        assert preflight(http, "/api/sessions", PLAYER).status_code == 403
        assert http.get("/api/sessions", headers={"Origin": server.url, **bearer}).json() == []
        asyncio.run(publish_and_watch(server))

    with running_server(ServerSettings(token=token, extra_origins=("*",))) as server:
        with httpx.Client(base_url=server.url) as http:
            r = preflight(http, "/whep/some-session", "https://anyone.example")
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://anyone.example"


def test_allowed_origins_are_checked() -> None:
    resolved = ServerSettings(extra_origins=("HTTPS://Player.Example:443", "http://[::1]:8080"))
    assert resolved.resolved().extra_origins == ("https://player.example", "http://[::1]:8080")
    for bad in ("player.example", "https://player.example/", "https://x:99999", "null"):
        with pytest.raises(UserError, match="--allow-origin"):
            ServerSettings(extra_origins=(bad,)).resolved()
    with pytest.raises(UserError, match="needs --token"):
        ServerSettings(extra_origins=("*",)).resolved()
    assert ServerSettings(host="0.0.0.0", extra_origins=("*",)).resolved().token  # generated
    for bad_token in ("pässwörd-pässwörd-1", "a long token with spaces"):  # not a header value
        with pytest.raises(UserError, match="printable ASCII without spaces"):
            ServerSettings(token=bad_token).resolved()


def test_openapi_docs_list_the_api(server: Running) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/docs").status_code == 200
        paths = http.get("/openapi.json").json()["paths"]
    api = {"/api/sessions", "/api/sessions/{session_id}/prompt", "/api/sessions/{session_id}"}
    assert api | {"/whip", "/whep/{session_id}"} <= set(paths)


# -- ICE servers -----------------------------------------------------------------------------------
def test_no_stun_server_is_asked_unless_configured(
    still: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiortc's default asks Google's STUN server for every peer (and waits 5 s offline)."""
    asked: list[tuple[str, int]] = []

    async def stun(protocol: object, server: tuple[str, int]) -> NoReturn:
        asked.append(server)
        raise OSError("no STUN server in tests")

    monkeypatch.setattr(aioice.ice, "server_reflexive_candidate", stun)
    sdp = {"Content-Type": "application/sdp"}

    async def publish_and_watch(server: Running) -> None:
        publisher, viewer = client_peer(), client_peer()  # the test's own peers ask none either
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        viewer.addTransceiver("video", direction="recvonly")
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            assert r.status_code == 201, r.text
            sid = r.headers["location"].rsplit("/", 1)[1]
            r = await http.post(f"/whep/{sid}", content=await ice_complete(viewer), headers=sdp)
            assert r.status_code == 201, r.text
            await http.delete(f"/whip/{sid}")
        await publisher.close()
        await viewer.close()

    with running_server(ServerSettings()) as server:
        asyncio.run(publish_and_watch(server))
    assert asked == []  # neither the session's peer nor the viewer's
    with running_server(ServerSettings(ice_servers=("stun:127.0.0.1:3478",))) as server:
        asyncio.run(publish_and_watch(server))
    assert asked and set(asked) == {("127.0.0.1", 3478)}
    for bad in ("http://example.com", "turn:example.com"):
        with pytest.raises(UserError, match="--ice-server"):
            create_app(ServerSettings(ice_servers=(bad,)), LookModel())


def test_ice_servers_aiortc_would_ignore_are_refused_before_the_model_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiortc parses more URLs than its ICE agent uses, and skips the rest without a word."""
    import typer
    from typer.testing import CliRunner

    from mirage_lsd.cli.serve import serve

    used = ("stun:127.0.0.1:3478", "turns:u:p@turn.example", "turn:u:p@t?transport=tcp")
    assert len(ice_configuration(used[:2]).iceServers) == 2
    assert len(ice_configuration(used[2:]).iceServers) == 1
    cases = {
        ("stuns:stun.example",): "'stuns:stun.example': aiortc ignores this form",
        ("turn:u:p@t.example?transport=tls",): "aiortc ignores this form",
        ("turns:u:p@t.example?transport=udp",): "aiortc ignores this form",
        ("stun:a.example", "stun:b.example"): "'stun:b.example': aiortc uses only the first STUN",
        ("turn:u:p@a.example", "turns:u:p@b.example"): "only the first STUN and the first TURN",
    }
    for urls, message in cases.items():
        with pytest.raises(UserError, match=message):
            ServerSettings(ice_servers=urls).resolved()

    def no_model(name: str, options: object) -> NoReturn:
        raise AssertionError("the model loaded before the URL was checked")

    monkeypatch.setattr("mirage_lsd.server.app.load_model", no_model)
    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, ["--port", "0", "--ice-server", "turn:u:p@t?transport=tls"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "--ice-server 'turn:t?transport=tls': aiortc ignores this form" in result.output
    assert "u:p" not in result.output  # the login holds a password


# -- the output's timestamps ----------------------------------------------------------------------
def test_output_pts_keep_rising_when_the_input_rtp_clock_wraps(still: np.ndarray) -> None:
    """aiortc stamps decoded frames with the sender's RTP timestamp, which wraps at 2**32."""

    async def run() -> None:
        recorder = StatsRecorder("test-looks", "cpu", 1, "live")
        slot = NewestFrameSlot(recorder)
        executor = ThreadPoolExecutor(1)
        engine = StreamEngine(LookModel(), max_steps=1)
        track = TransformTrack(slot, engine, executor, recorder)
        encoder = Vp8Encoder()
        stamps = []
        for pts in (2**32 - 3000, 0, 3000):
            frame = av.VideoFrame.from_ndarray(still, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 90_000)
            slot.put(frame)
            out = await track.recv()
            payloads, _ = encoder.encode(out)  # libvpx refuses a pts below its first
            assert payloads
            stamps.append(out.pts)
            await asyncio.sleep(0.01)
        assert stamps == sorted(set(stamps)) and stamps[0] == 0
        track.stop()
        executor.shutdown()

    asyncio.run(run())


# -- a slow model: newest frame wins, stale frames are counted, the loop stays free -------------
class SlowModel(LookModel):
    """The look model at 8 frames per second at most: it sleeps 120 ms a frame. While
    `gate` is cleared, the next step holds until it is set (and says so in `held`)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()

    def step(
        self, image: np.ndarray, cond: Conditioning, state: State, steps: int
    ) -> tuple[np.ndarray, State]:
        time.sleep(0.12)
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(30)
        return super().step(image, cond, state, steps)


def test_slow_model_drops_stale_frames_without_blocking(still: np.ndarray) -> None:
    async def run(server: Running) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        receiver = Receiver()
        pc.on("track", receiver.attach)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            sid = r.json()["session_id"]
            await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
            await receiver.frame_after(8)
            model.gate.clear()  # the next step holds: the stats are answered meanwhile
            assert await asyncio.to_thread(model.held.wait, 10)
            try:
                # answered while the model is held mid-step (for 30 s): not after the step
                stats = (await http.get(f"/api/sessions/{sid}/stats", timeout=10)).json()
            finally:
                model.gate.set()
            assert stats["dropped_input"] > 0 and stats["drop_ratio"] > 0.3
            assert stats["frames_in"] >= stats["frames_out"] + stats["dropped_input"] - 1
            assert stats["stages_ms"]["model"] >= 100
        await pc.close()

    model = SlowModel()
    with running_server(ServerSettings(), model) as server:
        asyncio.run(run(server))


def test_a_session_whose_peer_never_connects_is_closed(still: np.ndarray) -> None:
    async def run(server: Running) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url) as http:
            offer = {"sdp": await ice_complete(pc)}
            t0 = time.monotonic()  # the session's connect timer starts with its creation
            r = await http.post("/api/sessions", json=offer)
            assert r.status_code == 200
            await pc.close()  # gone before it ever took the answer
            assert len((await http.get("/api/sessions")).json()) == 1
            while (await http.get("/api/sessions")).json():  # the slot is freed...
                assert time.monotonic() - t0 < 15
                await asyncio.sleep(0.1)
            assert time.monotonic() - t0 >= 0.9  # ...by the 1 s connect timeout, not at once

    with running_server(ServerSettings(connect_timeout_s=1.0), LookModel()) as server:
        asyncio.run(run(server))


class SlowTextModel(LookModel):
    """A text encoder that takes a second, as a diffusers model's may on a CPU. While
    `gate` is cleared, encoding also holds until it is set (and says so in `held`)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()

    def encode_prompt(self, text: str | None) -> Conditioning:
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(30)
        time.sleep(1.0)
        return super().encode_prompt(text)


def test_opening_a_session_does_not_stall_the_server(still: np.ndarray) -> None:
    async def run(server: Running) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url) as http:
            offer = {"sdp": await ice_complete(pc)}
            model.gate.clear()
            opening = asyncio.create_task(http.post("/api/sessions", json=offer))
            assert await asyncio.to_thread(model.held.wait, 10)  # encoding the empty prompt
            try:
                assert (await http.get("/api/sessions", timeout=10)).status_code == 200
                assert not opening.done()  # the event loop was free while it was held
            finally:
                model.gate.set()
            r = await opening
            assert r.status_code == 200, r.text
            await http.delete(f"/api/sessions/{r.json()['session_id']}")
        await pc.close()

    model = SlowTextModel()
    with running_server(ServerSettings(), model) as server:
        asyncio.run(run(server))


def test_prompt_changes_queued_when_the_session_closes_are_404_not_500(
    still: np.ndarray,
) -> None:
    async def run(server: Running) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            sid = r.json()["session_id"]
            url = f"/api/sessions/{sid}/prompt"
            changes = [
                asyncio.create_task(http.post(url, json={"prompt": look}))
                for look in ("sunset", "thermal", "sepia")
            ]  # one encoding (a second each), two queued behind it
            await asyncio.sleep(0.3)
            assert (await http.delete(f"/api/sessions/{sid}")).status_code == 204
            codes = sorted([(await change).status_code for change in changes])
            assert codes == [200, 404, 404], codes
            assert (await http.post(url, json={"prompt": "sunset"})).status_code == 404
        await pc.close()

    with running_server(ServerSettings(), SlowTextModel()) as server:
        asyncio.run(run(server))


def test_viewers_joining_in_a_loop_are_rate_limited_and_leave_nothing_behind(
    still: np.ndarray,
) -> None:
    async def run(server: Running) -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        sdp = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            sid = r.headers["location"].rsplit("/", 1)[1]
            session = server.manager.get(sid)
            ghost = client_peer()
            ghost.addTransceiver("video", direction="recvonly")
            offer = await ice_complete(ghost)
            codes = []
            for _ in range(6):  # a burst of max_viewers + 2, then 0.2 a second
                r = await http.post(f"/whep/{sid}", content=offer, headers=sdp)
                codes.append(r.status_code)
                if r.status_code == 201:
                    assert (await http.delete(r.headers["location"])).status_code == 200
            assert codes == [201, 201, 201, 429, 429, 429], codes
            assert "too many new viewers" in r.json()["detail"]
            # each one's wait for a connection ended with it, not 30 s later
            assert not session._viewer_deadlines
            waiting = lambda: [t for t in session._drains if "connected" in repr(t.get_coro())]  # noqa: E731
            await wait_until(lambda: not waiting(), timeout=5)
            await http.delete(f"/whip/{sid}")
            await ghost.close()
        await publisher.close()

    settings = ServerSettings(max_viewers=1, session_rate_per_s=0.2)
    with running_server(settings, LookModel()) as server:
        asyncio.run(run(server))


# -- the CLI command -------------------------------------------------------------------------------
def test_serve_command_reports_bad_options_in_one_line() -> None:
    import typer
    from typer.testing import CliRunner

    from mirage_lsd.cli.serve import serve

    app = typer.Typer()
    app.command()(serve)
    runner = CliRunner()
    result = runner.invoke(app, ["--max-sessions", "0"])
    assert result.exit_code == 2 and "--max-sessions must be from 1 to 64" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["--port", port])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output
    result = runner.invoke(app, ["--host", "192.0.2.1", "--port", "0"])  # no such address here
    assert result.exit_code == 2 and "check --host" in result.output
    result = runner.invoke(app, ["--allow-origin", "https://player.example/watch"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--allow-origin 'https://player.example/watch': give scheme://host[:port]" in (
        result.output
    )
    result = runner.invoke(app, ["--allow-origin", "*"])
    assert result.exit_code == 2 and "--allow-origin '*' needs --token" in result.output


def test_a_taken_port_is_found_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from mirage_lsd.cli.serve import serve

    def no_load(name: str, options: object) -> StreamModel:
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr("mirage_lsd.server.app.load_model", no_load)
    app = typer.Typer()
    app.command()(serve)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(app, ["--port", port])
    assert result.exit_code == 2 and "try another --port" in result.output, result.output


def test_the_studio_link_carries_a_generated_token_url_encoded_and_never_a_given_one() -> None:
    from urllib.parse import parse_qs, urlsplit

    from mirage_lsd.cli.serve import studio_lines

    token = "a+b/c=[/]&d#e%f g"  # '+' in base64 tokens; rich markup; query syntax
    link, said = studio_lines("https", "0.0.0.0", 8000, token, generated=True)
    url = link.split()[1]
    assert url.startswith("https://127.0.0.1:8000/?token=")
    assert parse_qs(urlsplit(url).query)["token"] == [token]  # as URLSearchParams reads it
    assert said.endswith(token)
    (given,) = studio_lines("http", "::", 9000, token, generated=False)
    assert token not in given and "?token" not in given.split()[1]
    assert given.startswith("studio: http://[::1]:9000/ ") and "add ?token=" in given
    assert studio_lines("http", "127.0.0.1", 8000, None, generated=True) == [
        "studio: http://127.0.0.1:8000/ (listening on 127.0.0.1)"
    ]


def self_signed(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files (cryptography comes with aiortc)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def encrypt(key_path: Path, password: bytes) -> None:
    """Rewrite a PEM key encrypted with `password`, as `openssl ... -aes256` would."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )


def test_an_encrypted_key_needs_its_password_and_is_never_prompted_for(tmp_path: Path) -> None:
    """Without a terminal or stdin (a service), OpenSSL's own prompt could not be answered."""
    cert, key = self_signed(tmp_path)
    encrypt(key, b"s3cret")
    env = {k: v for k, v in os.environ.items() if k != "MIRAGE_LSD_SSL_KEYFILE_PASSWORD"}
    serve = ["serve", "--port", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    for extra_env, message in (
        ({}, f"{key}: the key is encrypted: give --ssl-keyfile-password"),
        ({"MIRAGE_LSD_SSL_KEYFILE_PASSWORD": "wrong"}, "wrong --ssl-keyfile-password"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "mirage_lsd.cli.app", *serve],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, **extra_env},
            start_new_session=True,  # no controlling terminal to prompt on
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert message in lines[0] and not result.stdout


def test_ctrl_c_stops_serve_cleanly_in_one_line() -> None:
    """uvicorn shuts down, then re-raises the SIGINT it caught: that is a stop, not an
    error (no red "error: interrupted", no traceback), with the shell's 130."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirage_lsd.cli.app", "serve", "--port", "0", "--model", "identity"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:  # the studio line comes once the socket listens
            line = proc.stderr.readline()
            assert line, "serve ended before it listened"
            if line.startswith("studio: "):
                url = line.split()[1]
        deadline = time.monotonic() + 30
        while True:  # serving: uvicorn's signal handlers are in place
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the studio page never answered"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = rest.strip().splitlines()
    assert proc.returncode == 130, rest
    assert lines[-1] == "stopped" and "error" not in rest and "Traceback" not in rest, rest


def test_serve_refuses_unusable_tls_files_in_one_line(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from mirage_lsd.cli.serve import serve

    app = typer.Typer()
    app.command()(serve)
    cert, key = self_signed(tmp_path)
    other_cert, _ = self_signed(tmp_path, "other")
    missing = tmp_path / "missing.pem"
    cases = {
        ("--ssl-certfile", str(missing)): f"--ssl-certfile {missing}: no such file",
        ("--ssl-certfile", str(cert), "--ssl-keyfile", str(missing)): "no such file",
        ("--ssl-keyfile", str(key)): "--ssl-keyfile needs --ssl-certfile",
        ("--ssl-certfile", str(other_cert), "--ssl-keyfile", str(key)): "key values mismatch",
        ("--ssl-certfile", str(cert)): "for TLS: not PEM",  # no key in the file
    }
    for args, message in cases.items():
        result = CliRunner().invoke(app, [*args, "--port", "0"])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("password", [None, "s3cret"], ids=["plain-key", "encrypted-key"])
def test_serve_speaks_https_with_the_given_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str | None
) -> None:
    """Browsers share camera and screen only in a secure context: https beyond localhost."""
    from mirage_lsd.cli.serve import serve

    servers: list[uvicorn.Server] = []

    class Recorded(uvicorn.Server):  # serve's server, to find its port and stop it
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            servers.append(self)

    monkeypatch.setattr(uvicorn, "Server", Recorded)
    monkeypatch.setattr("mirage_lsd.server.app.load_model", lambda name, options: LookModel())
    cert, key = self_signed(tmp_path)
    if password is not None:
        encrypt(key, password.encode())
    kwargs = {"port": 0, "ssl_certfile": cert, "ssl_keyfile": key, "ssl_keyfile_password": password}
    thread = threading.Thread(target=serve, kwargs=kwargs, name="test-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (servers and servers[0].started):
        assert thread.is_alive() and time.monotonic() < deadline, "serve did not start"
        time.sleep(0.05)
    try:
        port = servers[0].servers[0].sockets[0].getsockname()[1]
        with httpx.Client(verify=False) as http:
            page = http.get(f"https://127.0.0.1:{port}/")
            assert page.status_code == 200 and "studio.js" in page.text
            with pytest.raises(httpx.HTTPError):  # plain http is not served there
                http.get(f"http://127.0.0.1:{port}/")
    finally:
        servers[0].should_exit = True
        thread.join(15)


def test_sessions_get_the_servers_thread_count(still: np.ndarray) -> None:
    for bad in (0, True, 2.5):
        with pytest.raises(UserError, match="--threads must be a whole number from 1 to 1024"):
            ServerSettings(threads=bad).resolved()  # type: ignore[arg-type]

    async def run(server: Running) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            assert server.manager.get(r.json()["session_id"]).engine.threads == 1
            await http.delete(f"/api/sessions/{r.json()['session_id']}")
        await pc.close()

    with running_server(ServerSettings(threads=1), LookModel()) as server:
        asyncio.run(run(server))


def test_max_steps_is_checked_and_capped_at_what_the_model_runs() -> None:
    with pytest.raises(UserError, match="--max-steps must be from 1 to 50"):
        ServerSettings(max_steps=0).resolved()

    class TwoStepModel(LookModel):
        def __init__(self) -> None:
            super().__init__()
            self._info = ModelInfo("two-steps", "renders looks", looks=LOOKS, max_steps=2)

    with (
        running_server(ServerSettings(max_steps=8), TwoStepModel()) as running,
        httpx.Client(base_url=running.url) as http,
    ):
        assert http.get("/api/config").json()["max_steps"] == 2


class ScheduledModel(LookModel):
    """Runs its own schedule of 3 steps, whatever a session asks (a diffusers --t-index)."""

    def steps_run(self, steps: int) -> int:
        return 3


def test_a_session_reports_the_steps_its_model_runs(still: np.ndarray) -> None:
    async def run(server: Running) -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url) as http:
            offer = {"sdp": await ice_complete(pc), "steps": 1}
            sid = (await http.post("/api/sessions", json=offer)).json()["session_id"]
            assert (await http.get(f"/api/sessions/{sid}/stats")).json()["steps"] == 3
            assert (await http.get("/api/sessions")).json()[0]["steps"] == 3
            await http.delete(f"/api/sessions/{sid}")
        await pc.close()

    with running_server(ServerSettings(), ScheduledModel()) as server:
        asyncio.run(run(server))


def test_a_viewer_that_never_connects_frees_its_slot_and_bad_offers_are_400(
    still: np.ndarray,
) -> None:
    async def run(server: Running) -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        sdp = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            assert r.status_code == 201, r.text
            sid = r.headers["location"].rsplit("/", 1)[1]
            await publisher.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            await wait_until(lambda: publisher.connectionState == "connected")
            ghost = client_peer()  # offers, then vanishes without connecting
            ghost.addTransceiver("video", direction="recvonly")
            r = await http.post(f"/whep/{sid}", content=await ice_complete(ghost), headers=sdp)
            assert r.status_code == 201, r.text
            await ghost.close()
            busy = (await http.post(f"/whep/{sid}", content="v=0", headers=sdp)).json()
            assert "viewer slots" in busy["detail"]  # the viewer limit, not the session limit
            stats = lambda: server.manager.get(sid).stats()["extra"]["viewers"]  # noqa: E731
            await wait_until(lambda: stats() == 0, timeout=8)  # dropped after 2 s
            viewer = client_peer()
            viewer.addTransceiver("video", direction="recvonly")
            offer = (await ice_complete(viewer)).replace("a=setup:actpass", "a=setup:holdconn")
            r = await http.post(f"/whep/{sid}", content=offer, headers=sdp)
            assert r.status_code == 400 and r.json()["detail"].startswith("bad offer")
            await http.delete(f"/whip/{sid}")
            await viewer.close()
        await publisher.close()

    settings = ServerSettings(max_viewers=1, connect_timeout_s=2.0)
    with running_server(settings, LookModel()) as server:
        asyncio.run(run(server))


def test_every_control_message_counts_against_the_limit_and_none_crashes(
    server: Running, still: np.ndarray
) -> None:
    async def run() -> None:
        pc = client_peer()
        pc.addTrack(StillTrack(still))
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/api/sessions", json={"sdp": await ice_complete(pc)})
            session = server.manager.get(r.json()["session_id"])
            replies = [await session.handle_control("[" * 60_000) for _ in range(30)]
            assert replies[0] == {"type": "error", "error": "send a JSON object"}
            assert {"type": "error", "error": "rate limited: slow down"} in replies
            # the bucket is empty (and frozen): a REST change is refused before it is looked at
            session.control.rate = 0.0
            r = await http.post(f"/api/sessions/{session.id}/prompt", json={"seed": 5})
            assert r.status_code == 429 and session.engine.seed != 5
            # a refused prompt changes nothing else (past the limit, as with a full bucket)
            long = "x" * (server.app.state.settings.max_prompt_chars + 1)  # type: ignore[attr-defined]
            seed, strength = session.engine.seed, session.engine.strength
            assert seed != 12345 and strength != 0.25
            for bad in (long, "   ", "a\x00b"):  # as they reach the session past the schema
                change = LiveParams.model_construct(prompt=bad, seed=12345, strength=0.25)
                with pytest.raises(UserError):
                    await session.set_params(change, limited=False)
                assert (session.engine.seed, session.engine.strength) == (seed, strength)
            await session.set_params(LiveParams(seed=12345), limited=False)  # a good one
            assert session.engine.seed == 12345
            await http.delete(f"/api/sessions/{session.id}")
        await pc.close()

    asyncio.run(run())


class BrokenModel(LookModel):
    def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
        raise ValueError("model exploded")


def test_a_whip_session_whose_model_fails_is_closed(still: np.ndarray) -> None:
    async def run(server: Running) -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        viewer = client_peer()
        viewer.addTransceiver("video", direction="recvonly")
        sdp = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            sid = r.headers["location"].rsplit("/", 1)[1]
            await publisher.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            r = await http.post(f"/whep/{sid}", content=await ice_complete(viewer), headers=sdp)
            await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            # the viewer pulls frames, the model fails on the first: the session ends, so
            # the publisher (OBS) sees its peer go instead of streaming into nothing
            await wait_until(lambda: not server.manager.sessions, timeout=15)
        for pc in (publisher, viewer):
            await pc.close()

    with running_server(ServerSettings(), BrokenModel()) as server:
        asyncio.run(run(server))


def test_an_offer_without_video_is_refused_before_any_work(server: Running) -> None:
    with httpx.Client(base_url=server.url) as http:
        r = http.post("/api/sessions", json={"sdp": "v=0\r\n", "prompt": "night vision"})
        assert r.status_code == 400 and "no video" in r.json()["detail"]
        assert server.manager.sessions == {}


def test_a_whep_offer_without_video_is_refused(server: Running, still: np.ndarray) -> None:
    async def run() -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        listener = client_peer()  # asks for audio only: nothing this server sends
        listener.addTransceiver("audio", direction="recvonly")
        sdp = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            sid = r.headers["location"].rsplit("/", 1)[1]
            r = await http.post(f"/whep/{sid}", content=await ice_complete(listener), headers=sdp)
            assert (
                r.status_code == 400 and r.json()["detail"] == "bad offer: the offer has no video"
            )
            session = server.manager.get(sid)
            assert not session.viewers and not session.watched.is_set()  # no slot, no model
            await http.delete(f"/whip/{sid}")
        await publisher.close()
        await listener.close()

    asyncio.run(run())


def test_a_whip_stream_runs_its_model_only_while_someone_watches(
    server: Running, still: np.ndarray
) -> None:
    async def run() -> None:
        publisher = client_peer()
        publisher.addTransceiver(StillTrack(still), direction="sendonly")
        viewer = client_peer()
        viewer.addTransceiver("video", direction="recvonly")
        receiver = Receiver()
        viewer.on("track", receiver.attach)
        sdp = {"Content-Type": "application/sdp"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/whip", content=await ice_complete(publisher), headers=sdp)
            sid = r.headers["location"].rsplit("/", 1)[1]
            await publisher.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            session = server.manager.get(sid)
            made = lambda: session.stats()["frames_out"]  # noqa: E731
            await asyncio.sleep(1.0)
            assert made() == 0  # frames come in, nobody watches: no model step
            assert session.stats()["dropped_input"] == 0  # and none counts as dropped
            r = await http.post(f"/whep/{sid}", content=await ice_complete(viewer), headers=sdp)
            await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            await receiver.frame_after(3)
            assert (await http.delete(r.headers["location"])).status_code == 200
            await asyncio.sleep(0.5)  # a frame in flight may still finish
            left = made()
            await asyncio.sleep(1.5)
            assert made() <= left + 1  # the relay still pulls, but the model rests
            await http.delete(f"/whip/{sid}")
        await publisher.close()
        await viewer.close()

    asyncio.run(run())
