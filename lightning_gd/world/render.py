"""Procedural outdoor scenes with exact per-pixel labels: the embedded default world.

A scene is drawn back to front (sky, sun, clouds, ground, road, then buildings and trees sorted by
the row their base stands on), so occlusion follows depth and every label is exactly the colour that
ended up on top. Windows and doors are drawn only on building facades, doors at the bottom of one.

Two views of the same world (`VIEWS`):
- `street`: a wide view with many small objects and per-pixel texture noise. Doors and windows are
  smaller than one 8×8 cell of a 64 px generator's layer4, so no unit there can hold one.
- `close`: a closer view with fewer, larger objects drawn in flat, softly shaded colours: every door and
  window covers at least one 8×8 cell and a tree about 2×2 cells, as objects span one or more layer4 cells
  of the paper's 256 px scenes. The same contextual rules hold.

    >>> image, label = render_scene(0)
    >>> image.shape, image.dtype, label.shape, int(label.max()) < len(CONCEPTS)
    ((64, 64, 3), dtype('uint8'), (64, 64), True)
    >>> render_scene(0, view="close")[1].shape
    (64, 64)
"""

from __future__ import annotations

import numpy as np

from lightning_gd.errors import InvalidValue

SIZE = 64
RENDERER_VERSION = 2  # 2: the close view added; the street view draws the same scenes as in version 1

# Index = label value. Categories follow the paper's object / part / material split.
CONCEPTS: tuple[str, ...] = (
    "sky",
    "cloud",
    "sun",
    "grass",
    "road",
    "building",
    "window",
    "door",
    "tree",
)
CATEGORIES: dict[str, str] = {
    "sky": "object",
    "cloud": "object",
    "sun": "object",
    "grass": "material",
    "road": "object",
    "building": "object",
    "window": "part",
    "door": "part",
    "tree": "object",
}
LABEL = {name: i for i, name in enumerate(CONCEPTS)}
# the colour each concept's pixels are drawn in (the world segmenter declares them): close to what they look like
COLOURS: dict[str, tuple[int, int, int]] = {
    "sky": (120, 170, 255),
    "cloud": (245, 245, 245),
    "sun": (255, 215, 0),
    "grass": (60, 180, 60),
    "road": (90, 90, 90),
    "building": (200, 80, 60),
    "window": (40, 60, 160),
    "door": (120, 60, 20),
    "tree": (20, 100, 30),
}

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

# (zenith, horizon) sky colours per mood; sunset and dusk skies change the light on everything.
_SKIES = {
    "day": ((40, 110, 210), (150, 200, 245)),
    "hazy": ((110, 150, 200), (200, 215, 230)),
    "overcast": ((120, 125, 135), (175, 178, 185)),
    "sunset": ((70, 60, 140), (250, 150, 70)),
    "dusk": ((25, 30, 80), (190, 90, 110)),
}
_SKY_LIGHT = {  # multiplicative light on the ground and objects
    "day": (1.0, 1.0, 1.0),
    "hazy": (0.95, 0.97, 1.0),
    "overcast": (0.8, 0.82, 0.86),
    "sunset": (1.05, 0.8, 0.62),
    "dusk": (0.62, 0.55, 0.7),
}
_FACADES = [(170, 70, 50), (200, 180, 140), (150, 150, 155), (230, 225, 210), (110, 90, 80), (90, 110, 150)]
_ROOFS = [(120, 40, 35), (70, 70, 80), (60, 50, 45)]
_GRASS = [(70, 140, 50), (100, 160, 60), (90, 120, 45), (140, 150, 70), (60, 110, 60)]
_CROWNS = [(40, 110, 40), (60, 130, 45), (30, 90, 50), (170, 110, 40), (150, 70, 30)]


# Concepts a scene can be drawn without (`render_scene(..., omit=...)`): objects drawn over a background that
# stays a valid scene without them. A building is not one (its windows and doors would float in the air).
OMITTABLE: tuple[str, ...] = ("sun", "cloud", "road", "window", "door", "tree")


def render_scene(
    seed: int | np.random.SeedSequence, view: str | None = None, omit: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene of `view` (default `DEFAULT_VIEW`). Returns `(image, label)`: uint8 (64, 64, 3) and uint8
    (64, 64) indices into CONCEPTS. `omit` names concepts (of `OMITTABLE`) to leave out of the same scene: every
    random draw is made as before, so the other pixels are unchanged and the omitted concept's pixels show what
    lies behind it."""
    view = DEFAULT_VIEW if view is None else view
    if view not in VIEWS:
        raise InvalidValue(f"unknown world view {view!r}; choose one of {sorted(VIEWS)}")
    bad = sorted(set(omit) - set(OMITTABLE))
    if bad:
        raise InvalidValue(f"cannot omit {bad} from a scene; omittable concepts: {list(OMITTABLE)}")
    return VIEWS[view](seed, frozenset(omit))


def render_street_scene(
    seed: int | np.random.SeedSequence, omit: frozenset[str] = frozenset()
) -> tuple[np.ndarray, np.ndarray]:
    """The wide street view: many small objects, per-pixel texture noise, five sky moods."""
    rng = np.random.default_rng(seed)
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    lab = np.zeros((SIZE, SIZE), np.uint8)

    def paint(mask: np.ndarray, colour, concept: str, noise: float = 6.0) -> None:
        colour = np.asarray(colour, np.float32) * light
        # drawn even when omitted, so that the random draws after it, and so every other pixel, stay the same
        texture = rng.normal(0.0, noise, (int(mask.sum()), 3)).astype(np.float32)
        if concept not in omit:
            img[mask] = colour + texture
            lab[mask] = LABEL[concept]

    mood = rng.choice(list(_SKIES), p=[0.4, 0.15, 0.15, 0.18, 0.12])
    light = np.asarray(_SKY_LIGHT[mood], np.float32) * rng.uniform(0.85, 1.15)
    horizon = int(rng.integers(24, 42))

    # Sky: vertical gradient, zenith to horizon, with a little hue jitter.
    top, bottom = (np.asarray(c, np.float32) + rng.normal(0, 12, 3) for c in _SKIES[mood])
    t = np.clip(_YY / max(horizon, 1), 0, 1)[..., None]
    img[:] = top * (1 - t) + bottom * t
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    lab[:] = LABEL["sky"]

    if rng.random() < 0.45:
        cx, cy, r = rng.uniform(6, 58), rng.uniform(4, max(horizon - 8, 6)), rng.uniform(3.0, 6.0)
        sun_colour = (255, 245, 200) if mood in ("day", "hazy") else (255, 190, 110)
        paint((_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r, sun_colour, "sun", noise=3.0)

    for _ in range(rng.choice([0, 1, 2, 3, 4], p=[0.3, 0.25, 0.2, 0.15, 0.1])):
        cx, cy = rng.uniform(0, 64), rng.uniform(3, max(horizon - 6, 5))
        w, h = rng.uniform(6, 14), rng.uniform(2.0, 4.5)
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(int(rng.integers(2, 5))):  # a cloud is a few overlapping ellipses
            ox, oy = rng.uniform(-w * 0.7, w * 0.7), rng.uniform(-h * 0.5, h * 0.3)
            sx, sy = w * rng.uniform(0.5, 0.9), h * rng.uniform(0.7, 1.1)
            mask |= ((_XX - cx - ox) / sx) ** 2 + ((_YY - cy - oy) / sy) ** 2 <= 1
        mask &= _YY < horizon
        grey = rng.uniform(205, 250) if mood != "overcast" else rng.uniform(215, 240)
        paint(mask, (grey, grey, grey * rng.uniform(0.95, 1.05)), "cloud", noise=5.0)

    # Ground: grass with low-frequency patches and per-pixel texture.
    ground = _YY >= horizon
    grass = np.asarray(_GRASS[rng.integers(len(_GRASS))], np.float32) + rng.normal(0, 10, 3)
    patches = _smooth_noise(rng, 8) * 25
    img[ground] = (grass * light + patches[ground][:, None]) + rng.normal(0, 9, (int(ground.sum()), 3))
    lab[ground] = LABEL["grass"]

    if rng.random() < 0.6:
        _draw_road(rng, horizon, paint)

    things = [("building", _draw_building) for _ in range(rng.choice([0, 1, 2, 3], p=[0.2, 0.35, 0.3, 0.15]))]
    things += [("tree", _draw_tree) for _ in range(rng.choice([0, 1, 2, 3, 4], p=[0.2, 0.25, 0.25, 0.2, 0.1]))]
    bases = [int(rng.integers(horizon + 1, SIZE + 4)) for _ in things]
    for (_, draw), base in sorted(zip(things, bases), key=lambda p: p[1]):  # back to front
        draw(rng, base, horizon, paint)

    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), lab


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], bilinearly upsampled from a cells×cells grid."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, SIZE, dtype=np.float32)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (64, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


# Each view's road: grey level and blue tint, vanishing point, half widths at the bottom and top, the bottom's
# shift, and a crossing road's start below the horizon, margin above the bottom and thickness (ranges in px).
_STREET_ROAD = dict(
    grey=(70, 120),
    tint=(0.95, 1.1),
    vx=(10, 54),
    bottom=(10, 22),
    top=(0.5, 2.0),
    shift=15,
    start=3,
    end=6,
    thick=(4, 9),
)
_CLOSE_ROAD = dict(
    grey=(80, 120),
    tint=(0.97, 1.08),
    vx=(14, 50),
    bottom=(12, 22),
    top=(1.0, 3.0),
    shift=14,
    start=4,
    end=8,
    thick=(7, 12),
)


def _road(rng, horizon, shape: dict) -> tuple[tuple[float, float, float], np.ndarray]:
    """A road's colour and mask: in perspective to the horizon, or crossing the view."""
    grey = rng.uniform(*shape["grey"])
    colour = (grey, grey, grey * rng.uniform(*shape["tint"]))
    if rng.random() < 0.5:  # a road running to the horizon in perspective
        vx = rng.uniform(*shape["vx"])
        half_bottom, half_top = rng.uniform(*shape["bottom"]), rng.uniform(*shape["top"])
        bottom_x = vx + rng.uniform(-shape["shift"], shape["shift"])
        t = np.clip((_YY - horizon) / max(SIZE - horizon, 1), 0, 1)
        centre, half = vx * (1 - t) + bottom_x * t, half_top * (1 - t) + half_bottom * t
        return colour, (np.abs(_XX - centre) <= half) & (_YY >= horizon)
    y0 = rng.uniform(horizon + shape["start"], SIZE - shape["end"])  # a road crossing the view
    return colour, (_YY >= y0) & (_YY < y0 + rng.uniform(*shape["thick"]))


def _draw_road(rng, horizon, paint) -> None:
    colour, mask = _road(rng, horizon, _STREET_ROAD)
    paint(mask, colour, "road", noise=7.0)


def _draw_building(rng, base, horizon, paint) -> None:
    scale = 0.6 + 0.4 * (base - horizon) / max(SIZE - horizon, 1)  # nearer = bigger
    w = int(rng.uniform(18, 34) * scale)
    h = int(rng.uniform(18, 36) * scale)
    x0 = int(rng.integers(-w // 3, SIZE - 2 * w // 3))
    top = base - h
    facade = np.asarray(_FACADES[rng.integers(len(_FACADES))], np.float32) * rng.uniform(0.85, 1.15)
    body = (_XX >= x0) & (_XX < x0 + w) & (_YY >= top) & (_YY < base)
    paint(body, facade, "building", noise=7.0)
    if rng.random() < 0.5:  # pitched roof, part of the building
        rh = rng.uniform(3, 8) * scale
        cx = x0 + w / 2
        roof = (_YY < top) & (_YY >= top - rh) & (np.abs(_XX - cx) <= (w / 2) * (_YY - (top - rh)) / rh)
        paint(roof, _ROOFS[rng.integers(len(_ROOFS))], "building", noise=5.0)

    # Windows: a grid on the facade above the door row, each several pixels across.
    ww, wh = int(rng.integers(3, 6)), int(rng.integers(3, 6))
    gx, gy = ww + int(rng.integers(2, 5)), wh + int(rng.integers(2, 5))
    glass = (rng.uniform(40, 90), rng.uniform(60, 110), rng.uniform(100, 160))
    if rng.random() < 0.3:  # lit windows
        glass = (rng.uniform(220, 255), rng.uniform(190, 230), rng.uniform(90, 140))
    door_h = int(rng.integers(7, 11) * max(scale, 0.75))
    lx, ly = np.mod(_XX - x0 - 2, gx), np.mod(_YY - top - 2, gy)
    windows = body & (lx < ww) & (ly < wh) & (_XX < x0 + w - 2 - (gx - ww) // 2) & (_YY < base - door_h - 1)
    windows &= (_XX - x0 - 2 >= 0) & (_YY - top - 2 >= 0)
    # keep only whole windows so the part is a clean rectangle
    windows &= (_XX - lx + ww <= x0 + w - 1) & (_YY - ly + wh <= base - door_h - 1)
    paint(windows, glass, "window", noise=6.0)

    if rng.random() < 0.85 and w >= 8:
        dw = int(rng.integers(4, 8))
        dx = int(rng.integers(x0 + 1, max(x0 + w - dw, x0 + 2)))
        door = (_XX >= dx) & (_XX < dx + dw) & (_YY >= base - door_h) & (_YY < base) & body
        shade = rng.uniform(50, 120)
        paint(door, (shade * 1.1, shade * 0.75, shade * 0.5), "door", noise=5.0)


def _draw_tree(rng, base, horizon, paint) -> None:
    scale = 0.55 + 0.45 * (base - horizon) / max(SIZE - horizon, 1)
    cx = rng.uniform(0, 64)
    trunk_h = rng.uniform(5, 11) * scale
    trunk_w = max(2.0, rng.uniform(2, 3.5) * scale)
    trunk = (np.abs(_XX - cx) <= trunk_w / 2) & (_YY < base) & (_YY >= base - trunk_h - 2)
    paint(trunk, (rng.uniform(70, 110), rng.uniform(45, 65), rng.uniform(25, 40)), "tree", noise=5.0)
    r = rng.uniform(6, 11) * scale
    cy = base - trunk_h - r * 0.7
    crown = np.zeros((SIZE, SIZE), bool)
    for _ in range(int(rng.integers(3, 6))):  # a crown is a cluster of blobs
        ox, oy = rng.uniform(-0.5, 0.5) * r, rng.uniform(-0.5, 0.3) * r
        rr = r * rng.uniform(0.55, 0.85)
        crown |= (_XX - cx - ox) ** 2 + (_YY - cy - oy) ** 2 <= rr * rr
    leaf = np.asarray(_CROWNS[rng.integers(len(_CROWNS))], np.float32) * rng.uniform(0.8, 1.15)
    paint(crown, leaf, "tree", noise=12.0)


# --------------------------------------------------------------------------------------------------
# The close view: fewer, larger objects in flat colours with soft, low-frequency shading.

_CLOSE_SKIES = {  # (zenith, horizon, light on the ground and objects)
    "day": ((45, 115, 215), (160, 205, 245), (1.0, 1.0, 1.0)),
    "overcast": ((125, 130, 140), (185, 188, 195), (0.85, 0.87, 0.9)),
    "sunset": ((80, 70, 150), (250, 160, 80), (1.05, 0.85, 0.7)),
}


def render_close_scene(
    seed: int | np.random.SeedSequence, omit: frozenset[str] = frozenset()
) -> tuple[np.ndarray, np.ndarray]:
    """The close view. Sizes at 64 px (a layer4 cell is 8×8): windows 8–11 × 8–10 px, doors 8–11 × 12–17 px,
    tree crowns of radius 9–13 px, buildings 26–44 px wide and 24–38 px tall."""
    rng = np.random.default_rng(seed)
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    lab = np.zeros((SIZE, SIZE), np.uint8)
    mood = rng.choice(list(_CLOSE_SKIES), p=[0.55, 0.2, 0.25])
    zenith, horizon_colour, light = (np.asarray(c, np.float32) for c in _CLOSE_SKIES[mood])
    light = light * rng.uniform(0.9, 1.1)

    def paint(mask: np.ndarray, colour, concept: str, shade: np.ndarray | None = None) -> None:
        if concept in omit:
            return
        colour = np.asarray(colour, np.float32) * light
        img[mask] = colour if shade is None else colour * shade[mask][:, None]
        lab[mask] = LABEL[concept]

    horizon = int(rng.integers(20, 34))
    t = np.clip(_YY / max(horizon, 1), 0, 1)[..., None]
    img[:] = (zenith + rng.normal(0, 10, 3)) * (1 - t) + (horizon_colour + rng.normal(0, 10, 3)) * t
    lab[:] = LABEL["sky"]

    if rng.random() < 0.5:
        cx, cy, r = rng.uniform(8, 56), rng.uniform(6, max(horizon - 8, 7)), rng.uniform(5.0, 7.5)
        sun = (255, 240, 190) if mood == "day" else (255, 200, 120)
        img_sun = (_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r
        paint(img_sun & (_YY < horizon), np.asarray(sun) / light, "sun")  # the sun is not lit by itself

    for _ in range(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25])):
        cx, cy = rng.uniform(4, 60), rng.uniform(5, max(horizon - 6, 6))
        w, h = rng.uniform(10, 18), rng.uniform(3.5, 6.0)
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(int(rng.integers(2, 4))):  # a cloud is a few overlapping ellipses
            ox, oy = rng.uniform(-w * 0.6, w * 0.6), rng.uniform(-h * 0.4, h * 0.3)
            mask |= ((_XX - cx - ox) / (w * rng.uniform(0.6, 0.9))) ** 2 + ((_YY - cy - oy) / h) ** 2 <= 1
        grey = rng.uniform(215, 250)
        paint(mask & (_YY < horizon), (grey, grey, grey * rng.uniform(0.97, 1.03)), "cloud")

    ground = _YY >= horizon
    grass = np.asarray(_GRASS[rng.integers(len(_GRASS))], np.float32) + rng.normal(0, 8, 3)
    paint(ground, grass, "grass", shade=1.0 + 0.12 * _smooth_noise(rng, 4))

    if rng.random() < 0.5:
        _draw_close_road(rng, horizon, paint)

    things = [_draw_close_building] * int(rng.choice([0, 1, 2], p=[0.15, 0.6, 0.25]))
    things += [_draw_close_tree] * int(rng.choice([0, 1, 2], p=[0.2, 0.45, 0.35]))
    bases = [int(rng.integers(horizon + 6, SIZE + 3)) for _ in things]
    for draw, base in sorted(zip(things, bases), key=lambda p: p[1]):  # back to front
        draw(rng, base, paint)

    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), lab


def _draw_close_road(rng, horizon, paint) -> None:
    colour, mask = _road(rng, horizon, _CLOSE_ROAD)
    paint(mask, colour, "road")


def _draw_close_building(rng, base, paint) -> None:
    w, h = int(rng.integers(26, 45)), int(rng.integers(24, 39))
    x0 = int(rng.integers(-w // 4, SIZE - 3 * w // 4))
    top = base - h
    facade = np.asarray(_FACADES[rng.integers(len(_FACADES))], np.float32) * rng.uniform(0.85, 1.15)
    body = (_XX >= x0) & (_XX < x0 + w) & (_YY >= top) & (_YY < base)
    side_light = 1.0 + 0.06 * np.clip((_XX - x0) / max(w, 1) - 0.5, -0.5, 0.5)  # light from one side
    paint(body, facade, "building", shade=side_light)
    if rng.random() < 0.5:  # a pitched roof, part of the building
        rh = rng.uniform(5, 9)
        cx = x0 + w / 2
        roof = (_YY < top) & (_YY >= top - rh) & (np.abs(_XX - cx) <= (w / 2) * (_YY - (top - rh)) / rh)
        paint(roof, _ROOFS[rng.integers(len(_ROOFS))], "building")

    door_h, dw = int(rng.integers(12, 18)), int(rng.integers(8, 12))
    ww, wh = int(rng.integers(8, 12)), int(rng.integers(8, 11))
    gx, gy = ww + int(rng.integers(3, 6)), wh + int(rng.integers(3, 6))
    glass = (rng.uniform(40, 90), rng.uniform(60, 110), rng.uniform(110, 170))
    if rng.random() < 0.25:  # lit windows
        glass = (rng.uniform(220, 255), rng.uniform(190, 230), rng.uniform(90, 140))
    lx, ly = np.mod(_XX - x0 - 3, gx), np.mod(_YY - top - 3, gy)
    windows = body & (lx < ww) & (ly < wh) & (_XX - x0 - 3 >= 0) & (_YY - top - 3 >= 0)
    # whole windows only, clear of the facade's right edge and of the door row
    windows &= (_XX - lx + ww <= x0 + w - 3) & (_YY - ly + wh <= base - door_h - 2)
    paint(windows, glass, "window")

    if rng.random() < 0.9:
        dx = int(rng.integers(x0 + 2, max(x0 + w - dw - 1, x0 + 3)))
        door = (_XX >= dx) & (_XX < dx + dw) & (_YY >= base - door_h) & (_YY < base) & body
        shade = rng.uniform(50, 120)
        paint(door, (shade * 1.1, shade * 0.75, shade * 0.5), "door")


def _draw_close_tree(rng, base, paint) -> None:
    cx = rng.uniform(2, 62)
    trunk_h, trunk_w = rng.uniform(6, 11), rng.uniform(3, 5)
    trunk = (np.abs(_XX - cx) <= trunk_w / 2) & (_YY < base) & (_YY >= base - trunk_h - 3)
    paint(trunk, (rng.uniform(70, 110), rng.uniform(45, 65), rng.uniform(25, 40)), "tree")
    r = rng.uniform(9, 13)
    cy = base - trunk_h - r * 0.75
    crown = np.zeros((SIZE, SIZE), bool)
    for _ in range(int(rng.integers(3, 6))):  # a crown is a cluster of blobs
        ox, oy = rng.uniform(-0.45, 0.45) * r, rng.uniform(-0.45, 0.25) * r
        rr = r * rng.uniform(0.6, 0.85)
        crown |= (_XX - cx - ox) ** 2 + (_YY - cy - oy) ** 2 <= rr * rr
    leaf = np.asarray(_CROWNS[rng.integers(len(_CROWNS))], np.float32) * rng.uniform(0.85, 1.15)
    lit_from_above = 1.1 - 0.25 * np.clip((_YY - (cy - r)) / (2 * r), 0, 1)  # darker towards the bottom
    paint(crown, leaf, "tree", shade=lit_from_above)


VIEWS = {"street": render_street_scene, "close": render_close_scene}
DEFAULT_VIEW = "close"  # the shipped GAN, segmenter and feature net were trained on this view
