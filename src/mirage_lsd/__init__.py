"""mirage-lsd: live-stream diffusion.

import mirage_lsd
engine = mirage_lsd.StreamEngine(resolution=(720, 1280))
engine.start(input_source=0, on_frame=engine.render)
"""

from mirage_lsd.engine import Stats, StreamEngine
from mirage_lsd.errors import UserError
from mirage_lsd.frame import Frame, FrameInfo
from mirage_lsd.models.base import ModelInfo, StreamModel

__version__ = "0.1.0"

__all__ = ["Frame", "FrameInfo", "ModelInfo", "Stats", "StreamEngine", "StreamModel", "UserError"]
