"""Looks: procedural image transformations, chosen by a text prompt.

They are the training targets for the `mirage-lsd-v1` model. Every look is a fixed,
deterministic function of its input frame (textures are anchored to pixel
coordinates), so a static scene gives a static look.

    from mirage_lsd.looks import LOOKS, render_look
    out = render_look("pencil_sketch", rgb_uint8)
"""

from mirage_lsd.looks.catalog import LOOKS, Look, UnknownLookError, get_look, render_look

__all__ = ["LOOKS", "Look", "UnknownLookError", "get_look", "render_look"]
