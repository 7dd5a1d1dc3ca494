"""Sessions: one peer connection in, one `StreamEngine` (own stream state), viewers out.

A session owns its peer connection, its engine, its model thread, the pump task
and any WHEP viewers; `close()` releases all of them and is safe to call twice.
The manager enforces `max_sessions` and closes a session when its peer goes away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.sdp import SessionDescription
from pydantic import ValidationError

from mirage_lsd.engine.prompt import validate_prompt
from mirage_lsd.engine.stats import StatsRecorder
from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.errors import UserError, first_line
from mirage_lsd.models.base import StreamModel
from mirage_lsd.server.security import TokenBucket
from mirage_lsd.server.settings import (
    LiveParams,
    ServerSettings,
    SessionOptions,
    ice_configuration,
)
from mirage_lsd.server.tracks import NewestFrameSlot, TransformTrack, drain, pump

log = logging.getLogger(__name__)

Kind = Literal["webrtc", "whip"]
#: New sessions a burst may have beyond max_sessions. A stream stopped and started again
#: at once (the page's Stop then Start, an encoder reconnecting) needs a second creation
#: before the 1/s rate refills the first, and one retry of it a third; a loop still stops.
SESSION_BURST_MARGIN = 2


class BusyError(Exception):
    """All session slots are taken (or, with a message, all viewer slots)."""


class BadOfferError(ValueError):
    """An SDP offer aiortc cannot parse or answer (no common codec, a malformed line)."""


def check_offer(sdp: str) -> None:
    """Refuse, before any work is done for it, an offer with no video to transform."""
    try:
        media = SessionDescription.parse(sdp).media
    except Exception as exc:  # aiortc's parser raises whatever its lines make it raise
        raise BadOfferError(first_line(exc)) from exc
    if not any(m.kind == "video" for m in media):
        raise BadOfferError("the offer has no video")


async def accept_offer(pc: RTCPeerConnection, sdp: str) -> None:
    """`setRemoteDescription`, with aiortc's many failure types made one: BadOfferError."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
    except Exception as exc:  # KeyError, AssertionError, OperationError, ... from aiortc
        reason = first_line(exc)
        raise BadOfferError(reason) from exc


class NotFoundError(Exception):
    """No session (or viewer) with that id."""


class RateLimitedError(Exception):
    """Too many of something (its message says what): control messages, new sessions."""


@dataclass(frozen=True)
class SessionInfo:
    id: str
    kind: Kind
    prompt: str | None
    steps: int
    age_s: float
    connection: str
    viewers: int
    error: str | None


class Session:
    """One live stream: its input peer, engine, transform track and WHEP viewers."""

    def __init__(
        self,
        manager: SessionManager,
        kind: Kind,
        engine: StreamEngine,
        options: SessionOptions,
        settings: ServerSettings,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        # what runs: a diffusers model's --t-index list, whatever the session asked for
        self.steps = engine.model.steps_run(options.steps)
        self.created = time.monotonic()
        self._manager = manager
        self._settings = settings
        self.engine = engine
        info = engine.model.info
        self.recorder = StatsRecorder(info.name, info.device, self.steps, "live")
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"mirage-model-{self.id}")
        # Prompt encoding may be slow (a text encoder): its own thread, in order, so the
        # event loop stays free and frames keep flowing with the old prompt meanwhile.
        self.prompt_executor = ThreadPoolExecutor(1, thread_name_prefix=f"mirage-prompt-{self.id}")
        self.control = TokenBucket(settings.control_rate_per_s, settings.control_burst)
        # a viewer costs a peer (certificate, ICE sockets) as a session does: joins in a
        # loop, each one left at once, would keep the slots free but the server busy
        self.viewer_joins = TokenBucket(
            settings.session_rate_per_s, settings.max_viewers + SESSION_BURST_MARGIN
        )
        self._viewer_deadlines: dict[str, asyncio.Task[None]] = {}
        self.pc = RTCPeerConnection(manager.ice)
        self.viewers: dict[str, RTCPeerConnection] = {}
        self.relay = MediaRelay()
        self.slot = NewestFrameSlot(self.recorder, counting=self._watched_now)
        # a WHIP publisher (OBS) reads no stats: a failed model ends its session, so the
        # publisher sees its peer close; the page reads the error, then ends its own
        on_fail = self._end_soon if kind == "whip" else None
        # a WHIP stream is watched only over WHEP: the model runs while a viewer is there
        self.watched = asyncio.Event() if kind == "whip" else None
        self.output = TransformTrack(
            self.slot, self.engine, self.executor, self.recorder, on_fail, self.watched,
            settings.max_input_pixels,
        )  # fmt: skip
        self._pump: asyncio.Task[None] | None = None
        self._drains: list[asyncio.Task[None]] = []
        self._deadline: asyncio.Task[None] | None = None  # see SessionManager.open
        self._closed = False
        self._watch(self.pc)

    # -- signalling ------------------------------------------------------------
    async def answer(self, sdp: str, send_back: bool) -> RTCSessionDescription:
        """Accept the peer's offer; `send_back` returns the transformed video on it."""
        pc = self.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "video" or self._pump is not None:
                self._drains.append(asyncio.create_task(drain(track), name=f"drain-{self.id}"))
                return
            self.recorder.started()
            self._pump = asyncio.create_task(pump(track, self.slot), name=f"pump-{self.id}")

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            @channel.on("message")
            async def on_message(message: object) -> None:
                reply = await self.handle_control(message)
                if channel.readyState == "open":
                    channel.send(json.dumps(reply))

        await accept_offer(pc, sdp)
        if send_back:
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.sender.replaceTrack(
                        self.relay.subscribe(self.output, buffered=False)
                    )
                    transceiver.direction = "sendrecv"
                    break
            else:
                pc.addTrack(self.relay.subscribe(self.output, buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription

    async def add_viewer(self, sdp: str) -> tuple[str, RTCSessionDescription]:
        """WHEP: a receive-only peer that watches this session's output."""
        if len(self.viewers) >= self._settings.max_viewers:
            raise BusyError(
                f"all {self._settings.max_viewers} viewer slots of this stream are in use"
            )
        check_offer(sdp)  # one with nothing to watch would hold a slot and wake the model
        if not self.viewer_joins.allow():
            raise RateLimitedError("too many new viewers")
        viewer_id = uuid.uuid4().hex[:12]
        pc = RTCPeerConnection(self._manager.ice)
        self.viewers[viewer_id] = pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and viewer_id in self.viewers:
                await self.remove_viewer(viewer_id)

        try:
            await accept_offer(pc, sdp)
            pc.addTrack(self.relay.subscribe(self.output, buffered=False))
            for transceiver in pc.getTransceivers():
                transceiver.direction = "sendonly"
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await self.remove_viewer(viewer_id)
            raise
        if self._closed:  # the stream ended while this viewer negotiated: nothing to watch
            self.viewers.pop(viewer_id, None)
            await pc.close()
            raise NotFoundError(self.id)
        if self.watched is not None and not self.watched.is_set():
            self.engine.reset()  # its history is from before the pause: start afresh
            self.watched.set()
        # a viewer that never connects (it left, or its offer had no media) frees its slot
        deadline = asyncio.create_task(self._drop_if_never_connected(viewer_id, pc))
        self._viewer_deadlines[viewer_id] = deadline
        self._track(deadline)
        return viewer_id, pc.localDescription

    async def _drop_if_never_connected(self, viewer_id: str, pc: RTCPeerConnection) -> None:
        await asyncio.sleep(self._settings.connect_timeout_s)
        if pc.connectionState != "connected" and self.viewers.get(viewer_id) is pc:
            log.info("session %s: viewer %s never connected, dropping it", self.id, viewer_id)
            await self.remove_viewer(viewer_id)

    def _watched_now(self) -> bool:
        """Whether input frames are for someone now (an unwatched WHIP stream drops none)."""
        return self.watched is None or self.watched.is_set()

    def _end_soon(self) -> None:
        self._track(asyncio.get_running_loop().create_task(self._manager.discard(self.id)))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep a helper task to cancel at close, and forget it once it is done."""
        self._drains.append(task)
        task.add_done_callback(lambda t: t in self._drains and self._drains.remove(t))

    async def remove_viewer(self, viewer_id: str) -> None:
        pc = self.viewers.pop(viewer_id, None)
        if pc is None:
            raise NotFoundError(viewer_id)
        deadline = self._viewer_deadlines.pop(viewer_id, None)
        if deadline is not None and deadline is not asyncio.current_task():
            deadline.cancel()  # it would hold the closed peer for connect_timeout_s
        if self.watched is not None and not self.viewers:
            self.watched.clear()  # the last one left: the model rests until the next
        await pc.close()

    # -- control ---------------------------------------------------------------
    async def set_params(self, params: LiveParams, limited: bool = True) -> None:
        """Apply a change (rate limited per session); prompts are encoded in the prompt thread."""
        if limited and not self.control.allow():
            raise RateLimitedError("too many control messages")
        limit = self._settings.max_prompt_chars
        if params.prompt is not None:  # first: a refused or failed prompt changes nothing
            text = validate_prompt(params.prompt)  # blank, NUL, too long
            if len(text) > limit:
                raise UserError(f"prompt is {len(text)} characters: keep it to {limit} or fewer")
            await self._encode_prompt(params.prompt, params.transition_frames)
        if params.strength is not None:
            self.engine.set_strength(params.strength)
        if params.seed is not None:
            self.engine.set_seed(params.seed)

    async def _encode_prompt(self, prompt: str, transition_frames: int | None) -> None:
        if self._closed:
            raise NotFoundError(self.id)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.prompt_executor, self.engine.set_prompt, prompt, transition_frames
            )
        except asyncio.CancelledError:
            # closed meanwhile, the queued encode dropped: the session has ended; a
            # cancelled request (the server stopping) stays cancelled
            task = asyncio.current_task()
            if self._closed and not (task is not None and task.cancelling()):
                raise NotFoundError(self.id) from None
            raise
        except Exception as exc:
            if self._closed:  # closed meanwhile: the queued encode was dropped or refused
                raise NotFoundError(self.id) from None
            if isinstance(exc, UserError):
                raise
            # the encoder itself failed (out of memory, say): one line, not a 500
            log.warning("session %s: prompt not applied: %s", self.id, first_line(exc))
            raise UserError(f"prompt not applied: {first_line(exc)}") from None

    async def handle_control(self, message: object) -> dict[str, Any]:
        """One data channel message -> one reply: `{"type": "params", ...}` or `{"type": "stats"}`.

        Every message counts against the session's control rate limit, malformed ones too.
        """
        try:
            if not self.control.allow():
                raise RateLimitedError
            try:
                data = json.loads(message) if isinstance(message, str) else None
            except RecursionError:  # "[[[[..." nested past Python's stack
                data = None
            if not isinstance(data, dict):
                raise ValueError("send a JSON object")
            kind = data.pop("type", None)
            if kind == "stats":
                return {"type": "stats", "stats": self.stats()}
            if kind == "params":
                await self.set_params(LiveParams.model_validate(data), limited=False)
                return {"type": "ack", **self.params()}
            raise ValueError("type must be 'params' or 'stats'")
        except RateLimitedError:
            return {"type": "error", "error": "rate limited: slow down"}
        except NotFoundError:
            return {"type": "error", "error": "the session has ended"}
        except ValidationError as exc:
            return {"type": "error", "error": exc.errors()[0]["msg"]}
        except (UserError, ValueError) as exc:
            return {"type": "error", "error": str(exc)}
        except Exception as exc:  # every message gets its reply, and the page its error
            log.warning("session %s: control message failed: %s", self.id, first_line(exc))
            return {"type": "error", "error": first_line(exc)}

    def params(self) -> dict[str, Any]:
        """The live parameters now."""
        engine = self.engine
        return {"prompt": engine.prompt, "strength": engine.strength, "seed": engine.seed}

    def stats(self) -> dict[str, Any]:
        stats = self.recorder.snapshot(not self._closed)
        error = None if self.output.error is None else str(self.output.error)
        extra = {"viewers": len(self.viewers), "kind": self.kind, "error": error}
        return replace(stats, extra=extra).to_dict()

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.id,
            self.kind,
            self.engine.prompt,
            self.steps,
            round(time.monotonic() - self.created, 3),
            self.pc.connectionState,
            len(self.viewers),
            None if self.output.error is None else str(self.output.error),
        )

    # -- lifetime --------------------------------------------------------------
    def _watch(self, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.debug("session %s: connection %s", self.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self._manager.discard(self.id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.recorder.finished()
        self.slot.end()
        self.output.stop()
        for task in (self._pump, *self._drains, self._deadline):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for pc in [self.viewers.pop(v, None) for v in list(self.viewers)]:
            if pc is not None:  # a viewer may have left meanwhile
                await pc.close()
        await self.pc.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.prompt_executor.shutdown(wait=False, cancel_futures=True)


class SessionManager:
    """All sessions of the server, at most `settings.max_sessions` at a time."""

    def __init__(self, settings: ServerSettings, model: StreamModel) -> None:
        self.settings = settings
        self.model = model
        self.ice = ice_configuration(settings.ice_servers)
        self.creations = TokenBucket(
            settings.session_rate_per_s, settings.max_sessions + SESSION_BURST_MARGIN
        )
        self.sessions: dict[str, Session] = {}
        self._pending = 0  # slots reserved by sessions still negotiating

    async def open(self, kind: Kind, options: SessionOptions, sdp: str) -> tuple[Session, Any]:
        """A new session answering `sdp`; BusyError when all slots are taken,
        RateLimitedError when sessions are opened faster than `session_rate_per_s`."""
        # 1. reserve a slot before any await, so concurrent offers cannot overshoot
        if len(self.sessions) + self._pending >= self.settings.max_sessions:
            raise BusyError
        if options.steps > self.settings.max_steps:
            raise UserError(f"steps must be at most {self.settings.max_steps} on this server")
        check_offer(sdp)  # cheap, before the engine and the prompt's encoding
        # each new session costs an engine, a thread and a peer: a client that opens and
        # closes them in a loop keeps the slots free but the server busy
        if not self.creations.allow():
            raise RateLimitedError("too many new sessions")
        self._pending += 1
        try:
            # 2. engine and peer, 3. answer (gathers ICE candidates)
            # the engine encodes the empty prompt (a text encoder pass for diffusers
            # models): off the event loop, which carries every session's media
            engine = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: StreamEngine(
                    self.model,
                    max_steps=options.steps,
                    strength=options.strength,
                    seed=options.seed,
                    threads=self.settings.threads,
                ),
            )
            session = Session(self, kind, engine, options, self.settings)
            try:
                if options.prompt:
                    params = LiveParams(
                        prompt=options.prompt, transition_frames=options.transition_frames
                    )
                    await session.set_params(params, limited=False)
                answer = await session.answer(sdp, send_back=kind == "webrtc")
            except BaseException:
                await session.close()
                raise
            self.sessions[session.id] = session
            session._deadline = asyncio.create_task(self._close_if_never_connected(session))
            return session, answer
        finally:
            self._pending -= 1

    async def _close_if_never_connected(self, session: Session) -> None:
        """A client that sent an offer and vanished must not hold a slot for good."""
        await asyncio.sleep(self.settings.connect_timeout_s)
        if session.pc.connectionState != "connected":
            log.info(
                "session %s: no connection after %.0f s, closing",
                session.id,
                self.settings.connect_timeout_s,
            )
            await self.discard(session.id)

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFoundError(session_id)
        return session

    async def close(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            raise NotFoundError(session_id)
        await session.close()

    async def discard(self, session_id: str) -> None:
        """Close a session if it is still open (the peer went away)."""
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await session.close()

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.discard(session_id)  # one may close by itself meanwhile
