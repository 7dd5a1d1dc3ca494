"""Server settings and the one schema of live parameters shared by page, data channel and REST."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mirage_lsd.device import check_threads
from mirage_lsd.engine.prompt import MAX_PROMPT_CHARS
from mirage_lsd.errors import UserError
from mirage_lsd.models.registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

LOOPBACK_NAMES = ("localhost",)
#: scheme://host[:port], as a browser sends it in the Origin header (lower case, no path).
ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?")
DEFAULT_PORTS = {"http": 80, "https": 443}
#: The --ice-server URLs aiortc uses (it parses more, and skips the rest without a word).
ICE_FORMS = (
    "stun:HOST[:PORT], turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] "
    "or turns:USER:PASSWORD@HOST[:PORT][?transport=tcp]"
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_origin(text: str) -> str:
    """`text` as a browser writes its Origin header (lower case, no default port), else a
    UserError: an entry that can never equal a sent Origin would silently allow nothing."""
    if text == "*":
        return text
    match = ORIGIN.fullmatch(text.strip().lower())
    if match is None or (match[3] is not None and not 0 < int(match[3]) < 65536):
        raise UserError(
            f"--allow-origin {text!r}: give scheme://host[:port] with no path, "
            "e.g. https://player.example.com"
        )
    scheme, host, port = match.groups()
    if port is None or int(port) == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def ice_configuration(urls: tuple[str, ...]) -> RTCConfiguration:
    """The peers' STUN/TURN servers: only those asked for, and only ones aiortc uses.

    aiortc's default is Google's STUN server: every session would contact it, and on an
    offline LAN each answer would wait 5 s for it. A TURN URL carries its login as
    `turn:USER:PASSWORD@HOST[:PORT]`. aiortc parses `stuns:`, TURN over TLS and any number
    of servers, but its ICE agent gets only what `connection_kwargs` picks out: a URL that
    adds nothing to that would be ignored, so it is refused. aiortc loads here, not at import.
    """
    from aiortc import RTCConfiguration, RTCIceServer
    from aiortc.rtcicetransport import connection_kwargs, parse_stun_turn_uri

    servers: list[RTCIceServer] = []
    for url in urls:
        scheme, _, rest = url.partition(":")
        login, _, address = rest.rpartition("@")
        uri = f"{scheme}:{address}"  # shown without the login: it holds a password
        try:
            parse_stun_turn_uri(uri)
        except ValueError as exc:
            raise UserError(f"--ice-server {uri!r}: {exc} (use {ICE_FORMS})") from None
        username, _, credential = login.partition(":")
        if scheme.startswith("turn") and not (username and credential):
            raise UserError(f"--ice-server {uri!r}: a TURN server needs USER:PASSWORD@ before HOST")
        server = RTCIceServer(uri, username or None, credential or None)
        if connection_kwargs([*servers, server]) == connection_kwargs(servers):
            if connection_kwargs([server]):
                why = "aiortc uses only the first STUN and the first TURN server"
            else:
                why = f"aiortc ignores this form (use {ICE_FORMS})"
            raise UserError(f"--ice-server {uri!r}: {why}")
        servers.append(server)
    return RTCConfiguration(iceServers=servers)


@dataclass(frozen=True)
class ServerSettings:
    """How `mirage-lsd serve` runs. Build with `ServerSettings(...).resolved()`.

    token: required as `Authorization: Bearer TOKEN` when set; `resolved()` generates
    one when the server binds a non-loopback address and none was given.
    extra_origins: web pages of other origins that may use WHIP/WHEP (CORS), never the
    studio's /api. `*` (any page) needs a token: without one, any site the user visits
    could publish to or watch this server.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model: str = DEFAULT_MODEL
    device: str = "auto"
    max_sessions: int = 4
    max_viewers: int = 8  # WHEP viewers per session: each one runs its own encoder
    max_steps: int = 4
    compile: bool | None = None  # torch.compile (None: the built-in model compiles on CPU and CUDA)
    fp16: bool | None = None  # half precision (None: on CUDA)
    downscale: int | None = None  # built-in model: denoise at frame / N (None: automatic)
    threads: int | None = None  # torch's, for the model (None: the model's choice)
    token: str | None = None
    max_prompt_chars: int = 500
    max_body_bytes: int = 64 * 1024  # an SDP offer is a few KiB
    # bigger input frames are scaled down to this many pixels before the model: a tiny
    # VP8 frame can declare 16383x16383, 800 MB of RGB a frame in the shared process
    max_input_pixels: int = 1920 * 1088  # 1080p as codecs store it (16-row blocks)
    control_rate_per_s: float = 10.0  # control messages per session: sustained rate
    control_burst: int = 20  # ... and burst
    session_rate_per_s: float = 1.0  # new sessions: sustained rate, bursts of max_sessions + 2
    connect_timeout_s: float = 30.0  # a session whose peer has not connected by then is closed
    extra_origins: tuple[str, ...] = ()
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs (none: host candidates only)

    def resolved(self) -> ServerSettings:
        """Checked settings, with a generated token when bound beyond loopback."""
        if not 1 <= self.max_sessions <= 64:
            raise UserError(f"--max-sessions must be from 1 to 64, got {self.max_sessions}")
        if not 1 <= self.max_steps <= 50:
            raise UserError(f"--max-steps must be from 1 to 50, got {self.max_steps}")
        if self.threads is not None:
            check_threads(self.threads, "--threads")
        if not 1 <= self.max_viewers <= 64:
            raise UserError(f"--max-viewers must be from 1 to 64, got {self.max_viewers}")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be from 0 to 65535, got {self.port}")
        if self.token is not None and len(self.token) < 16:
            raise UserError("--token must be at least 16 characters: use a long random string")
        if self.token is not None and not all("!" <= c <= "~" for c in self.token):
            # an HTTP header carries ASCII, and browsers refuse other header values
            raise UserError("--token must be printable ASCII without spaces")
        if self.max_input_pixels < 64 * 64:
            raise UserError(f"max_input_pixels must be at least 4096, got {self.max_input_pixels}")
        if not 1 <= self.max_prompt_chars <= MAX_PROMPT_CHARS:
            raise UserError(f"max_prompt_chars must be from 1 to {MAX_PROMPT_CHARS}")
        ice_configuration(self.ice_servers)  # a bad URL fails before the model loads
        token = self.token
        if token is None and not is_loopback(self.host):
            token = secrets.token_urlsafe(24)
        origins = tuple(dict.fromkeys(normalize_origin(o) for o in self.extra_origins))
        if "*" in origins and token is None:
            raise UserError(
                "--allow-origin '*' needs --token: without one any web page could use this server"
            )
        return replace(self, token=token, extra_origins=origins)

    @property
    def local_only(self) -> bool:
        return is_loopback(self.host)


class LiveParams(BaseModel):
    """A change of the live parameters: sent by the page, the data channel and REST.

    Fields left out keep their value.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        None, min_length=1, max_length=MAX_PROMPT_CHARS, description="What to look like"
    )
    transition_frames: int = Field(0, ge=0, le=300, description="Blend over this many frames")
    strength: float | None = Field(
        None, ge=0.0, le=1.0, description="0 shows the input, 1 the full transformation"
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="The stream's fixed noise")


class SessionOptions(BaseModel):
    """Per-session choices fixed at start (steps decide the model's per-frame work)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    transition_frames: int = Field(0, ge=0, le=300)
    steps: int = Field(1, ge=1, le=50)
    strength: float = Field(1.0, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class OfferRequest(SessionOptions):
    """The page's signalling: its SDP offer plus the session's options."""

    sdp: str = Field(max_length=60_000)
    type: str = Field("offer", pattern="^offer$")
