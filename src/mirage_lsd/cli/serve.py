"""`mirage-lsd serve`: the studio web app (page, REST, WebRTC, WHIP/WHEP) under uvicorn.

Registered in cli/app.py with `app.command()(serve)`.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from rich.console import Console

from mirage_lsd.cli.errors import guarded, setup_logging
from mirage_lsd.cli.options import CompileOpt, Fp16Opt, ThreadsOpt
from mirage_lsd.errors import UserError
from mirage_lsd.models.registry import DEFAULT_MODEL

console = Console(stderr=True, highlight=False, soft_wrap=True)


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; beyond loopback a token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = DEFAULT_MODEL,
    max_sessions: Annotated[
        int, typer.Option("--max-sessions", help="Streams at once; more get 503 busy.")
    ] = 4,
    max_viewers: Annotated[
        int, typer.Option("--max-viewers", help="WHEP viewers per stream; more get 503 busy.")
    ] = 8,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MIRAGE_LSD_TOKEN",
            help="Bearer token for every API call (generated on non-local addresses).",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Most denoising steps a session may ask for.")
    ] = 4,
    compile: CompileOpt = None,
    fp16: Fp16Opt = None,
    downscale: Annotated[
        int | None,
        typer.Option("--downscale", help="Built-in model: denoise at frame / N.", min=1, max=16),
    ] = None,
    threads: ThreadsOpt = None,
    ice_server: Annotated[
        list[str] | None,
        typer.Option(
            "--ice-server",
            metavar="URL",
            help="STUN/TURN URL for clients behind NAT (repeatable: one STUN, one TURN): "
            "stun:HOST[:PORT], turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] or "
            "turns:USER:PASSWORD@HOST[:PORT]. Default: none, no outside server is contacted.",
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            metavar="ORIGIN",
            help="A web page origin, scheme://host[:port], that may use WHIP and WHEP "
            "(players, OBS browser sources) but not the studio's API (repeatable). "
            "'*' allows any page, only with a token (--token, or a --host beyond loopback).",
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            "--ssl-certfile",
            help="Serve https with this PEM certificate: browsers share camera and "
            "screen only over https or on localhost.",
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option("--ssl-keyfile", help="The certificate's PEM private key."),
    ] = None,
    ssl_keyfile_password: Annotated[
        str | None,
        typer.Option(
            "--ssl-keyfile-password",
            metavar="PASSWORD",
            envvar="MIRAGE_LSD_SSL_KEYFILE_PASSWORD",
            help="Password of an encrypted key (better from the environment: a command "
            "line is visible to other users of the machine).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """Serve the studio: browser page, REST API (/docs), WebRTC, WHIP and WHEP."""

    def body() -> None:
        import uvicorn

        from mirage_lsd.server.app import create_app
        from mirage_lsd.server.settings import ServerSettings

        setup_logging(debug)
        # 1. settings (a token appears here when bound beyond loopback), 2. the app
        settings = ServerSettings(
            host=host,
            port=port,
            model=model,
            device=device,
            max_sessions=max_sessions,
            max_viewers=max_viewers,
            max_steps=max_steps,
            compile=compile,
            fp16=fp16,
            downscale=downscale,
            threads=threads,
            token=token,
            ice_servers=tuple(ice_server or ()),
            extra_origins=tuple(allow_origin or ()),
        ).resolved()
        # before the model loads: a typo or a taken port fails fast, in one line
        _check_tls(ssl_certfile, ssl_keyfile, ssl_keyfile_password)
        sock = _bind(host, port)
        try:
            app = create_app(settings)
        except BaseException:
            sock.close()
            raise
        # 3. where to open it
        scheme = "https" if ssl_certfile else "http"
        bound = sock.getsockname()[1]  # --port 0: the one the system chose
        for line in studio_lines(scheme, host, bound, settings.token, generated=token is None):
            console.print(line, markup=False, highlight=False)
        # 4. serve until Ctrl-C
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="debug" if debug else "warning",
                access_log=False,  # its lines carry the studio link's ?token=
                lifespan="on",
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                ssl_keyfile_password=ssl_keyfile_password,
            )
        )
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn stopped cleanly, then re-raised the Ctrl-C
            console.print("stopped")
            raise typer.Exit(130) from None

    guarded(debug, body)


def studio_lines(
    scheme: str, host: str, port: int, token: str | None, generated: bool
) -> list[str]:
    """What `serve` prints at start: the studio's address, with a generated token in it
    (URL-encoded: the page reads it with URLSearchParams, where '+' is a space) and on its
    own line; a token the user gave is theirs to type, never echoed into a service's log."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    query = "?token=" + quote(token, safe="") if token and generated else ""
    note = ", add ?token=YOUR_TOKEN" if token and not generated else ""
    lines = [f"studio: {scheme}://{shown}:{port}/{query} (listening on {host}{note})"]
    if token and generated:
        lines.append(f"token (send as 'Authorization: Bearer TOKEN'): {token}")
    return lines


def _check_tls(certfile: Path | None, keyfile: Path | None, password: str | None) -> None:
    """Refuse missing or unusable TLS files in one line (uvicorn would fail later, verbosely).

    OpenSSL would prompt on the terminal for an encrypted key's password, and uvicorn ask
    again: the password comes only from the option, else an encrypted key is an error.
    """
    if certfile is None:
        if keyfile is not None:
            raise UserError("--ssl-keyfile needs --ssl-certfile")
        return
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not path.is_file():
            raise UserError(f"{option} {path}: no such file")
    key = keyfile or certfile
    asked = False

    def give_password() -> str:  # OpenSSL calls it only for an encrypted key
        nonlocal asked
        asked = True
        if password is None:
            raise UserError(
                f"{key}: the key is encrypted: give --ssl-keyfile-password "
                "(or MIRAGE_LSD_SSL_KEYFILE_PASSWORD)"
            )
        return password

    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile, give_password)
    except ssl.SSLError as exc:  # reason: KEY_VALUES_MISMATCH, or None for a file not PEM
        if asked and exc.reason is None:  # or for a key the password did not decrypt
            raise UserError(
                f"{key}: cannot decrypt the key: wrong --ssl-keyfile-password"
            ) from None
        why = exc.reason.lower().replace("_", " ") if exc.reason else "not PEM"
        raise UserError(
            f"cannot use {certfile} (key: {keyfile or 'in it'}) for TLS: {why}"
        ) from None


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or a one-line error that says which one to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name == "posix":  # on Windows it would let two servers share the port silently
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        taken = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        hint = "try another --port" if taken else "check --host"
        why = exc.strerror or str(exc)
        raise UserError(f"cannot listen on {host}:{port} ({why}): {hint}") from None
    return sock
