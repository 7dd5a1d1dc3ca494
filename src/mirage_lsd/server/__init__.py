"""The studio web server: WebRTC in and out, WHIP/WHEP, a REST API and a page.

`create_app(settings)` builds the FastAPI app; `mirage-lsd serve` runs it with uvicorn.
Nothing heavy happens at import time: aiortc and the model load in `create_app`.
"""

from mirage_lsd.server.settings import ServerSettings

__all__ = ["ServerSettings"]
