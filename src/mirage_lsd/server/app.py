"""`create_app(settings)`: the studio's FastAPI app (page, REST, WebRTC signalling, WHIP/WHEP)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from mirage_lsd.device import resolve_device, resolve_dtype
from mirage_lsd.errors import UserError
from mirage_lsd.looks.catalog import UnknownLookError, get_look
from mirage_lsd.models.base import StreamModel
from mirage_lsd.models.registry import LoadOptions, load_model
from mirage_lsd.server.security import GuardMiddleware, require_token
from mirage_lsd.server.sessions import (
    BadOfferError,
    BusyError,
    NotFoundError,
    RateLimitedError,
    SessionManager,
)
from mirage_lsd.server.settings import LiveParams, OfferRequest, ServerSettings
from mirage_lsd.server.whip import whip_router

log = logging.getLogger(__name__)
STATIC = resources.files("mirage_lsd.server") / "static"


def presets(model: StreamModel) -> list[dict[str, str]]:
    """The model's looks as one-click prompts (a look's first description, else its name)."""
    out = []
    for name in model.info.looks:
        try:
            look = get_look(name)
            out.append({"name": name, "title": look.title, "prompt": look.descriptions[0]})
        except UnknownLookError:
            out.append({"name": name, "title": name, "prompt": name.replace("_", " ")})
    return out


def create_app(settings: ServerSettings, model: StreamModel | None = None) -> FastAPI:
    """Build the app. The model loads once here and is shared; each session has its own state."""
    settings = settings.resolved()
    if model is None:
        device = resolve_device(settings.device)
        opts = LoadOptions(
            device=device,
            dtype=resolve_dtype(device, settings.fp16),
            max_steps=settings.max_steps,
            compile=settings.compile,
            downscale=settings.downscale,
        )
        model = load_model(settings.model, opts)
    if settings.max_steps > model.info.max_steps:  # the page's slider offers what runs
        log.info("%s runs at most %d steps", model.info.name, model.info.max_steps)
        settings = replace(settings, max_steps=model.info.max_steps)
    manager = SessionManager(settings, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.close_all()

    app = FastAPI(
        title="mirage-lsd studio",
        description="Live video diffusion over WebRTC. Send `Authorization: Bearer TOKEN` "
        "when the server was started with a token.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.manager = settings, manager
    app.add_middleware(GuardMiddleware, settings=settings)
    _add_error_handlers(app)
    auth = require_token(settings)
    app.include_router(_api_router(manager, settings, model, auth))
    app.include_router(whip_router(manager, auth))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _api_router(
    manager: SessionManager,
    settings: ServerSettings,
    model: StreamModel,
    auth: Callable[[Request], None],
) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["sessions"], dependencies=[Depends(auth)])

    @router.get("/config", summary="Model, looks and limits the page needs")
    async def config() -> dict[str, Any]:
        return {
            "model": model.info.name,
            "looks": presets(model),
            "max_steps": settings.max_steps,
            "max_prompt_chars": settings.max_prompt_chars,
            "max_sessions": settings.max_sessions,
        }

    @router.post("/sessions", summary="Start a session from a WebRTC offer (JSON signalling)")
    async def create_session(offer: OfferRequest) -> dict[str, str]:
        session, answer = await manager.open("webrtc", offer, offer.sdp)
        return {"session_id": session.id, "sdp": answer.sdp, "type": answer.type}

    @router.get("/sessions", summary="List sessions")
    async def list_sessions() -> list[dict[str, Any]]:
        return [asdict(s.info()) for s in manager.sessions.values()]

    @router.post(
        "/sessions/{session_id}/prompt", summary="Change a session's prompt, strength or seed"
    )
    async def set_prompt(session_id: str, params: LiveParams) -> dict[str, Any]:
        session = manager.get(session_id)
        await session.set_params(params)
        return {"id": session_id, **session.params()}

    @router.get("/sessions/{session_id}/stats", summary="A session's live telemetry")
    async def stats(session_id: str) -> dict[str, Any]:
        return manager.get(session_id).stats()

    @router.delete("/sessions/{session_id}", status_code=204, summary="End a session")
    async def delete_session(session_id: str) -> Response:
        await manager.close(session_id)
        return Response(status_code=204)

    return router


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(BusyError)
    async def busy(request: Request, exc: BusyError) -> JSONResponse:
        limit = manager_of(request).settings.max_sessions
        what = str(exc) or f"all {limit} sessions are in use"
        return error(503, f"busy: {what}, try later", {"Retry-After": "10"})

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return error(404, f"no session or viewer '{exc}'")

    @app.exception_handler(RateLimitedError)
    async def rate_limited(request: Request, exc: RateLimitedError) -> JSONResponse:
        return error(429, f"{exc}: slow down", {"Retry-After": "1"})

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return error(422, str(exc.errors()[0]["msg"]))

    @app.exception_handler(BadOfferError)
    async def bad_sdp(request: Request, exc: BadOfferError) -> JSONResponse:
        return error(400, f"bad offer: {exc}")


def manager_of(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.manager
    return manager
