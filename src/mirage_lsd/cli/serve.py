"""`mirage-lsd serve`: the studio web app (page, REST, WebRTC, WHIP/WHEP) under uvicorn.

Registered in cli/app.py with `app.command()(serve)`.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mirage_lsd.cli.errors import guarded, setup_logging
from mirage_lsd.cli.options import CompileOpt, Fp16Opt
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
            token=token,
            ice_servers=tuple(ice_server or ()),
            extra_origins=tuple(allow_origin or ()),
        ).resolved()
        # before the model loads: a typo fails fast
        _check_tls(ssl_certfile, ssl_keyfile, ssl_keyfile_password)
        app = create_app(settings)
        # 3. bind now, so a taken port is one clear line
        sock = _bind(host, port)
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
            host, f"[{host}]" if ":" in host else host
        )
        query = f"?token={settings.token}" if settings.token else ""
        scheme = "https" if ssl_certfile else "http"
        console.print(
            f"studio: {scheme}://{shown}:{sock.getsockname()[1]}/{query} (listening on {host})"
        )
        if settings.token and token is None:
            console.print(f"token (send as 'Authorization: Bearer TOKEN'): {settings.token}")
        # 4. serve until Ctrl-C
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="debug" if debug else "warning",
                lifespan="on",
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                ssl_keyfile_password=ssl_keyfile_password,
            )
        )
        server.run(sockets=[sock])

    guarded(debug, body)


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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}): try another --port"
        ) from None
    return sock
