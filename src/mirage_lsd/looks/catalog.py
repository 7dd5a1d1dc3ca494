"""The catalog of looks: name, title, text descriptions and the filter that renders it.

The descriptions are the prompts a look is trained under (embedded later by a
sentence-embedding model), so each look has several natural phrasings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mirage_lsd.errors import UserError
from mirage_lsd.looks import grades, graphic, painterly, sensor


@dataclass(frozen=True)
class Look:
    """A named, deterministic image transformation: HxWx3 uint8 RGB -> same shape."""

    name: str
    title: str
    descriptions: tuple[str, ...]
    render: Callable[[np.ndarray], np.ndarray]


class UnknownLookError(UserError, KeyError):
    """A look name that is not in the catalog; the message lists the names there are."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


_CATALOG = (
    Look(
        "pencil_sketch",
        "Pencil sketch",
        (
            "pencil sketch",
            "a graphite drawing on paper",
            "hand-drawn sketch",
            "black and white line drawing",
            "cross-hatched pencil illustration",
        ),
        painterly.pencil_sketch,
    ),
    Look(
        "watercolor",
        "Watercolor",
        (
            "watercolor painting",
            "soft watercolour washes on textured paper",
            "a loose aquarelle illustration",
            "painted with transparent watercolors",
            "pastel watercolor art",
        ),
        painterly.watercolor,
    ),
    Look(
        "oil_paint",
        "Oil painting",
        (
            "oil painting",
            "thick impasto oil paint on canvas",
            "a classical painting with visible brush strokes",
            "painted in oils",
            "expressive oil on canvas artwork",
        ),
        painterly.oil_paint,
    ),
    Look(
        "cartoon",
        "Cartoon",
        (
            "cartoon",
            "cel-shaded animation style",
            "a flat colored cartoon with bold outlines",
            "animated TV show look",
            "toon shading",
        ),
        graphic.cartoon,
    ),
    Look(
        "comic_halftone",
        "Comic halftone",
        (
            "comic book halftone",
            "printed comic with halftone dots",
            "retro pulp comic print",
            "CMYK dot screen like an old comic",
            "pop comic panel with ink outlines",
        ),
        graphic.comic_halftone,
    ),
    Look(
        "pixel_art",
        "Pixel art",
        (
            "pixel art",
            "8-bit video game graphics",
            "retro sprite with big square pixels",
            "low resolution pixelated game",
            "chunky pixels with a limited color palette",
        ),
        graphic.pixel_art,
    ),
    Look(
        "pop_art",
        "Pop art",
        (
            "pop art",
            "Warhol style screen print",
            "bold poster with four flat neon colors",
            "silkscreen pop art portrait",
            "posterized pink and yellow print",
        ),
        graphic.pop_art,
    ),
    Look(
        "blueprint",
        "Blueprint",
        (
            "blueprint",
            "white technical drawing on blue paper",
            "an architect's blueprint with a grid",
            "engineering schematic",
            "cyanotype line plan",
        ),
        graphic.blueprint,
    ),
    Look(
        "neon_edges",
        "Neon edges",
        (
            "neon edges",
            "glowing neon outlines in the dark",
            "light tubes tracing the shapes",
            "synthwave glow lines on black",
            "electric neon sign drawing",
        ),
        graphic.neon_edges,
    ),
    Look(
        "thermal",
        "Thermal camera",
        (
            "thermal camera",
            "infrared heat vision",
            "a thermographic image",
            "FLIR heat map footage",
            "predator heat signature view",
        ),
        sensor.thermal,
    ),
    Look(
        "night_vision",
        "Night vision",
        (
            "night vision",
            "green night vision goggles",
            "military NVG footage",
            "grainy green low-light camera",
            "looking through night-vision binoculars",
        ),
        sensor.night_vision,
    ),
    Look(
        "cyberpunk",
        "Cyberpunk",
        (
            "cyberpunk",
            "neon-noir city grade in magenta and cyan",
            "blade runner color grading",
            "futuristic neon-lit night scene",
            "synthwave purple and teal",
        ),
        grades.cyberpunk,
    ),
    Look(
        "sepia_vintage",
        "Sepia vintage",
        (
            "sepia vintage photo",
            "an old faded photograph",
            "antique brown-toned film",
            "scratched 1920s film footage",
            "aged sepia picture with vignette",
        ),
        grades.sepia_vintage,
    ),
    Look(
        "winter",
        "Winter",
        (
            "winter",
            "a snowy frozen day",
            "cold icy blue scene with falling snow",
            "frosty winter morning",
            "snow-covered wintry landscape",
        ),
        grades.winter,
    ),
    Look(
        "sunset",
        "Sunset",
        (
            "sunset",
            "golden hour light",
            "warm orange evening glow",
            "at dusk under a purple and orange sky",
            "sun setting, warm cinematic light",
        ),
        grades.sunset,
    ),
    Look(
        "underwater",
        "Underwater",
        (
            "underwater",
            "under the sea",
            "deep blue-green ocean water with caustics",
            "filmed beneath the waves",
            "submerged in a murky teal lake",
        ),
        grades.underwater,
    ),
)

LOOKS: dict[str, Look] = {look.name: look for look in _CATALOG}
if len(LOOKS) != len(_CATALOG):
    raise RuntimeError("look names in the catalog must be unique")


def get_look(name: str) -> Look:
    """The look called `name`; an unknown name raises `UnknownLookError` listing them all."""
    look = LOOKS.get(name)
    if look is None:
        raise UnknownLookError(f"unknown look '{name}': choose one of {', '.join(LOOKS)}")
    return look


def render_look(name: str, image: np.ndarray) -> np.ndarray:
    """Render look `name` on an HxWx3 uint8 RGB image."""
    return get_look(name).render(image)
