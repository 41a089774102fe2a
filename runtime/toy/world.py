"""The "shapes world": a seeded procedural data set where every prompt has a measurable meaning.

Two generations of the world exist, each a :class:`WorldRecipe` value (the shares below are data, not
code paths). ``first`` (the shipped weights up to 2026-12-02), one caption per image; ``{c}`` a colour word,
``{s}`` a shape, ``{S}`` a scene phrase:

=======================  ======  ================================================================
caption                  share   image
=======================  ======  ================================================================
``{S}``                  28 %    the whole image is scene S, with gentle low-frequency texture
``{S1} and {S2}``        14 %    two scenes: a wavy horizon split, or a rectangle of S2 inside S1
``a {c} {s}``            24 %    an object on a plain white background
``a {c} {s} in {S}``     20 %    an object on scene S
``a {c} sun in {S}``     7 %     a sun (disc with rays) on scene S (sometimes on white, no ``in``)
``""`` (empty)           7 %     any of the above: the unconditional prompt guidance needs
=======================  ======  ================================================================

Objects sit near the centre 70 % of the time (as in real photo data sets, so that the mask-centring
stabilization has something to fix) and anywhere otherwise, at 15-60 % of the image side.

``extended`` (the second generation) keeps the scene shares and changes the object images, where the first
world left the toy weak in the benchmark (objects against the canvas edge, two objects, objects on a
composed background): an object's background is white, one scene or two scenes, and is named in the caption
only part of the time (``a {c} {s}`` over a scene: a region brush's own prompt never names what surrounds
it); a second object ``and a {c} {s}`` joins about a quarter of them; about one object in eight is placed
against or cut by an edge of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reference colours, chosen far apart in RGB (no red/orange/brown or yellow/sand pairs): the minimum
# pairwise distance over colours and scenes is ~98 (gray vs green grass).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (245, 215, 0),
    "green": (20, 220, 20),
    "blue": (30, 40, 230),
    "purple": (150, 40, 190),
    "cyan": (0, 215, 215),
    "pink": (255, 120, 200),
    "gray": (128, 128, 128),
}
SCENES: dict[str, tuple[int, int, int]] = {
    "blue sky": (135, 190, 235),
    "green grass": (70, 140, 50),
    "beach sand": (225, 200, 140),
    "white snow": (240, 240, 245),
    "dark night": (15, 20, 50),
    "deep water": (20, 80, 130),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
OBJECTS: tuple[str, ...] = SHAPES + ("sun",)
WHITE = (255, 255, 255)
FUNCTION_WORDS: tuple[str, ...] = ("a", "in", "and")


def vocabulary_words() -> list[str]:
    """Every word a caption can contain (the tokenizer has one token for each)."""
    words = set(FUNCTION_WORDS) | set(COLORS) | set(OBJECTS)
    for phrase in SCENES:
        words.update(phrase.split())
    return sorted(words)


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # [S, S, 3] uint8
    caption: str


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency noise [size, size] by bilinear upsampling of a coarse random grid."""
    grid = rng.normal(0, amplitude, (cells + 1, cells + 1))
    xs = np.linspace(0, cells, size)
    i = np.clip(xs.astype(int), 0, cells - 1)
    f = xs - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def render_scene(rng: np.random.Generator, scene: str, size: int) -> np.ndarray:
    """A full-image scene [size, size, 3] float: its colour with gentle texture."""
    base = np.array(SCENES[scene], np.float32)
    tex = _smooth_noise(rng, size, 4, 9.0)[..., None]
    yy = np.arange(size, dtype=np.float32)[:, None, None]
    if scene == "deep water":  # soft horizontal waves
        tex = tex + 6 * np.sin(yy / 3.0 + rng.uniform(0, 6.28))
    elif scene == "green grass":  # faint vertical blades
        xx = np.arange(size, dtype=np.float32)[None, :, None]
        tex = tex + 5 * np.sin(xx * 1.7 + rng.uniform(0, 6.28))
    return np.broadcast_to(base, (size, size, 3)) + tex


def shape_mask(shape: str, cy: float, cx: float, r: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a shape with centre (cy, cx) and half-size r (pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    if shape == "triangle":  # apex up
        t = (dy + r) / (2 * r)  # 0 at apex, 1 at base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    if shape == "sun":
        disc = dy**2 + dx**2 <= (0.6 * r) ** 2
        angle = np.arctan2(dy, dx)
        dist = np.sqrt(dy**2 + dx**2)
        rays = (np.cos(8 * angle) > 0.6) & (dist > 0.7 * r) & (dist <= r)
        return disc | rays
    raise ValueError(f"unknown shape {shape!r}")


def _place(rng: np.random.Generator, size: int, edge_share: float = 0.0) -> tuple[float, float, float]:
    """An object's centre (cy, cx) and half-size r in pixels.

    ``edge_share`` of objects touch or cross an image edge: the centre lies within ``r`` of that edge
    (inside or beyond it by up to r/2, so the object is cut)."""
    if edge_share and rng.random() < edge_share:  # no draw without edges: the first world's draws stay
        r = rng.uniform(0.1, 0.25) * size
        cy, cx = rng.uniform(r, size - r, 2)
        offset = rng.uniform(-0.5 * r, r)  # distance of the centre from the edge, negative = beyond it
        side = int(rng.integers(4))
        if side == 0:
            cy = offset
        elif side == 1:
            cy = size - offset
        elif side == 2:
            cx = offset
        else:
            cx = size - offset
        return float(cy), float(cx), float(r)
    if rng.random() < 0.7:  # near the centre, fairly large
        r = rng.uniform(0.18, 0.3) * size
        cy, cx = size / 2 + rng.normal(0, 0.06 * size, 2)
    else:  # anywhere, any size
        r = rng.uniform(0.08, 0.25) * size
        cy, cx = rng.uniform(r, size - r, 2)
    return float(cy), float(cx), float(r)


def _two_scenes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    a, b = rng.choice(list(SCENES), 2, replace=False)
    img = render_scene(rng, a, size)
    other = render_scene(rng, b, size)
    yy, xx = np.mgrid[0:size, 0:size]
    if rng.random() < 0.6:  # wavy horizon: a above, b below
        horizon = rng.uniform(0.3, 0.7) * size + 3 * np.sin(xx / rng.uniform(6, 14) + rng.uniform(0, 6.28))
        region = yy >= horizon
    else:  # a rectangle of b inside a
        y0, x0 = rng.uniform(0, 0.5, 2) * size
        h, w = rng.uniform(0.3, 0.5, 2) * size
        region = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
    img[region] = other[region]
    return img, f"{a} and {b}"


@dataclass(frozen=True)
class WorldRecipe:
    """The shares that make a generation of the world (module docstring). Shares of object images are
    conditional on an object image; ``first`` reproduces the first generation draw for draw."""

    name: str
    scene_share: float = 0.315  # whole-image scene
    two_scene_share: float = 0.14  # two scenes (the rest are object images)
    sun_share: float = 0.1  # of objects
    scene_under_object: float = 0.45  # P(scene background | not a sun)
    scene_under_sun: float = 0.75
    two_scenes_under_object: float = 0.0  # P(two scenes | scene background)
    background_named: float = 1.0  # P(the caption names a scene background)
    second_object: float = 0.0
    edge_share: float = 0.0  # of placed objects
    empty_caption: float = 0.07


FIRST = WorldRecipe("first")
EXTENDED = WorldRecipe(
    "extended", scene_share=0.25, two_scene_share=0.12, scene_under_object=0.6, scene_under_sun=0.8,
    two_scenes_under_object=0.4, background_named=0.6, second_object=0.25, edge_share=0.125,
)  # fmt: skip
RECIPES: dict[str, WorldRecipe] = {r.name: r for r in (FIRST, EXTENDED)}


def _paint_object(rng: np.random.Generator, img: np.ndarray, shape: str, recipe: WorldRecipe) -> str:
    """Paints one object of a random colour into ``img`` (in place); returns its words ``a {c} {s}``."""
    color = str(rng.choice(list(COLORS)))
    cy, cx, r = _place(rng, img.shape[0], recipe.edge_share)
    mask = shape_mask(shape, cy, cx, r, img.shape[0])
    img[mask] = np.array(COLORS[color], np.float32) + rng.normal(0, 5, 3)
    return f"a {color} {shape}"


def _object_image(rng: np.random.Generator, size: int, recipe: WorldRecipe) -> tuple[np.ndarray, str]:
    sun = rng.random() < recipe.sun_share
    shape = "sun" if sun else str(rng.choice(SHAPES))
    if recipe is FIRST:  # the first generation's order of draws, kept so its data set is reproducible
        color = str(rng.choice(list(COLORS)))
        on_scene = rng.random() < (recipe.scene_under_sun if sun else recipe.scene_under_object)
        scene = str(rng.choice(list(SCENES))) if on_scene else None
        img = render_scene(rng, scene, size) if scene else np.full((size, size, 3), WHITE, np.float32)
        cy, cx, r = _place(rng, size)
        img[shape_mask(shape, cy, cx, r, size)] = np.array(COLORS[color], np.float32) + rng.normal(0, 5, 3)
        return img, f"a {color} {shape}" + (f" in {scene}" if scene else "")
    on_scene = rng.random() < (recipe.scene_under_sun if sun else recipe.scene_under_object)
    background = ""
    if not on_scene:
        img = np.full((size, size, 3), WHITE, np.float32)
    elif rng.random() < recipe.two_scenes_under_object:
        img, background = _two_scenes(rng, size)
    else:
        background = str(rng.choice(list(SCENES)))
        img = render_scene(rng, background, size)
    words = [_paint_object(rng, img, shape, recipe)]
    if rng.random() < recipe.second_object:
        words.append(_paint_object(rng, img, str(rng.choice(SHAPES)), recipe))
    caption = " and ".join(words)
    if background and rng.random() < recipe.background_named:
        caption += f" in {background}"
    return img, caption


def sample(rng: np.random.Generator, size: int, recipe: WorldRecipe = FIRST) -> Sample:
    """One random (image, caption) pair of the world."""
    u = rng.random()
    if u < recipe.scene_share:
        scene = str(rng.choice(list(SCENES)))
        img, caption = render_scene(rng, scene, size), scene
    elif u < recipe.scene_share + recipe.two_scene_share:
        img, caption = _two_scenes(rng, size)
    else:
        img, caption = _object_image(rng, size, recipe)
    if rng.random() < recipe.empty_caption:
        caption = ""
    return Sample(np.clip(img, 0, 255).round().astype(np.uint8), caption)


def dataset(seed: int, count: int, size: int, recipe: WorldRecipe = FIRST) -> tuple[np.ndarray, list[str]]:
    """``count`` samples as ([count, size, size, 3] uint8 images, captions), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    captions = []
    for i in range(count):
        s = sample(rng, size, recipe)
        images[i] = s.image
        captions.append(s.caption)
    return images, captions
