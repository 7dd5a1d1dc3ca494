"""WHIP ingest (RFC 9725) and WHEP egress: SDP offer in, 201 + Location + SDP answer out.

POST /whip                  publish a stream; it becomes a session (no video sent back)
DELETE /whip/{session}      stop publishing
POST /whep/{session}        watch a session's transformed output
DELETE /whep/{session}/{viewer}
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from mirage_lsd.server.sessions import SessionManager
from mirage_lsd.server.settings import SessionOptions

SDP = "application/sdp"


async def read_sdp(request: Request) -> str:
    """The request body as an SDP offer; 415 for another content type."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != SDP:
        raise HTTPException(415, f"send the SDP offer as Content-Type: {SDP}")
    body = await request.body()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the SDP offer is not UTF-8 text") from None


def sdp_created(sdp: str, location: str) -> Response:
    return Response(sdp, status_code=201, media_type=SDP, headers={"Location": location})


def whip_router(manager: SessionManager, auth: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(tags=["whip/whep"], dependencies=[Depends(auth)])

    @router.post("/whip", status_code=201, summary="WHIP: publish a stream (SDP offer)")
    async def whip_publish(request: Request, prompt: str | None = None, steps: int = 1) -> Response:
        sdp = await read_sdp(request)
        options = SessionOptions(prompt=prompt, transition_frames=0, steps=steps)
        session, answer = await manager.open("whip", options, sdp)
        response = sdp_created(answer.sdp, f"/whip/{session.id}")
        response.headers["X-Session-Id"] = session.id
        return response

    @router.patch("/whip/{session_id}", summary="Trickle ICE: not supported")
    async def whip_patch(session_id: str) -> Response:
        return Response(status_code=405, headers={"Allow": "DELETE"})

    @router.delete("/whip/{session_id}", summary="WHIP: stop publishing")
    async def whip_delete(session_id: str) -> Response:
        await manager.close(session_id)
        return Response(status_code=200)

    @router.post("/whep/{session_id}", status_code=201, summary="WHEP: watch a session")
    async def whep_watch(session_id: str, request: Request) -> Response:
        sdp = await read_sdp(request)
        viewer_id, answer = await manager.get(session_id).add_viewer(sdp)
        return sdp_created(answer.sdp, f"/whep/{session_id}/{viewer_id}")

    @router.delete("/whep/{session_id}/{viewer_id}", summary="WHEP: stop watching")
    async def whep_delete(session_id: str, viewer_id: str) -> Response:
        await manager.get(session_id).remove_viewer(viewer_id)
        return Response(status_code=200)

    return router
