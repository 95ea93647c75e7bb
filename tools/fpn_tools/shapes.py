"""Seeded procedural scenes of coloured shapes, with instance labels, boxes and masks.

The demo Mask R-CNN (demo_model.py, trained by tools/train_demo.py) learns five classes from
these scenes. A scene is a textured background (gradient, smooth noise, stripes or checker) with
3-8 solid shapes painted in order, so later shapes occlude earlier ones. Sizes run from ~16 px
to 45% of the short side, log-uniform, so that the RoIs land on every FPN level P2..P5.
"""
import math

import numpy as np

CLASS_NAMES = ["__background__", "circle", "square", "triangle", "star", "ring"]
CIRCLE, SQUARE, TRIANGLE, STAR, RING = 1, 2, 3, 4, 5

# An object keeps its annotation only if at least this much of it stays visible.
MIN_VISIBLE_FRACTION = 0.35
MIN_VISIBLE_PIXELS = 60
# Euclidean RGB distance an object's colour keeps from what it is painted over, so that every
# object's outline can be seen; background patterns are kept below it (see _background).
MIN_CONTRAST = 80.0


def _random_colour(rng):
    return rng.uniform(0, 255, 3)


def _background(rng, height, width):
    """float32 [H, W, 3]: one of four textures between two colours of limited contrast.

    The two colours differ by at most ~70 in RGB distance, below MIN_CONTRAST, so a checker cell
    or stripe never looks like a square object as much as a real object does.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = _random_colour(rng)
    offset = rng.normal(0, 1, 3)
    offset *= rng.uniform(20, 70) / (np.linalg.norm(offset) + 1e-6)
    other = np.clip(base + offset, 0, 255)
    kind = rng.integers(4)
    angle = rng.uniform(0, math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    if kind == 0:  # linear gradient
        t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
    elif kind == 1:  # smooth noise: a coarse random grid, bilinearly upsampled
        cell = rng.uniform(16, 64)
        gh, gw = int(height / cell) + 2, int(width / cell) + 2
        grid = rng.uniform(0, 1, (gh, gw)).astype(np.float32)
        gy, gx = y / cell, x / cell
        y0, x0 = gy.astype(np.int64), gx.astype(np.int64)
        fy, fx = gy - y0, gx - x0
        t = (grid[y0, x0] * (1 - fy) * (1 - fx) + grid[y0, x0 + 1] * (1 - fy) * fx
             + grid[y0 + 1, x0] * fy * (1 - fx) + grid[y0 + 1, x0 + 1] * fy * fx)
    elif kind == 2:  # stripes
        period = rng.uniform(6, 40)
        t = (np.floor(along / (period / 2)) % 2).astype(np.float32)
    else:  # checker, possibly rotated
        cell = rng.uniform(5, 24)
        across = -x * math.sin(angle) + y * math.cos(angle)
        t = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    image = base + t[..., None] * (other - base)
    # A second, gentle gradient over every texture, so no background is a flat two-tone pattern.
    tint = rng.normal(0, 12, 3)
    span = (along - along.mean()) / max(height, width)
    return image + span[..., None] * tint


def _shape_mask(kind, radius, angle, cx, cy, height, width, rng):
    """bool [H, W] of one shape whose circumscribed circle (radius) is centred at (cx, cy)."""
    x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, width)
    y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, height)
    # Pixel centres, relative to the shape's centre.
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    rho2 = dx * dx + dy * dy
    if kind == CIRCLE:
        local = rho2 <= radius * radius
    elif kind == SQUARE:
        half = radius / math.sqrt(2)
        local = (np.abs(u) <= half) & (np.abs(v) <= half)
    elif kind == TRIANGLE:
        # Equilateral: inside when within the inradius (radius / 2) of all three edge normals.
        local = np.ones(np.broadcast(u, v).shape, bool)
        for k in range(3):
            theta = k * 2 * math.pi / 3
            local &= u * math.cos(theta) + v * math.sin(theta) <= radius / 2
    elif kind == STAR:
        # Five points; in polar form, the edge from a tip (radius R, angle 0) to the next inner
        # vertex (radius r, angle pi/5) is r(s) = R r sin(pi/5) / (R sin s + r sin(pi/5 - s)),
        # with s the angle from the nearest tip folded into [0, pi/5].
        inner = radius * rng.uniform(0.42, 0.52)
        sector = math.pi / 5
        phi = np.mod(np.arctan2(v, u), 2 * sector)
        s = np.minimum(phi, 2 * sector - phi)
        edge = radius * inner * math.sin(sector) / (radius * np.sin(s) + inner * np.sin(sector - s))
        local = rho2 <= edge * edge
    elif kind == RING:
        inner = radius * rng.uniform(0.45, 0.65)
        local = (rho2 <= radius * radius) & (rho2 >= inner * inner)
    else:
        raise ValueError(f"unknown shape kind {kind}")
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = local
    return mask


def _pick_colour(rng, under, overlapped_colours):
    """A colour far enough from the pixels under the shape and from every shape it covers."""
    best, best_score = None, -1.0
    for _ in range(24):
        colour = _random_colour(rng)
        distance = np.linalg.norm(under - colour, axis=1)
        # Judged on the 5th percentile: a textured background is two colours, both must differ.
        score = float(np.percentile(distance, 5)) if len(distance) else 255.0
        for other in overlapped_colours:
            score = min(score, float(np.linalg.norm(other - colour)))
        if score >= MIN_CONTRAST:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def make_scene(seed, height, width):
    """Returns (rgb uint8 [H, W, 3], objects); objects are dicts with label (1..5), box
    [x1, y1, x2, y2] float (tight box of the visible mask, x2 and y2 exclusive) and mask
    (bool [H, W], the visible pixels), in painting order."""
    rng = np.random.default_rng(seed)
    image = _background(rng, height, width)
    short = min(height, width)
    min_diameter, max_diameter = max(16.0, short / 20), 0.45 * short
    owner = np.full((height, width), -1, np.int64)  # index of the top object at each pixel
    labels, colours, full_areas = [], [], []
    for _ in range(rng.integers(3, 9)):
        kind = int(rng.integers(1, 6))
        # A few placements per object: one that would hide too much of an earlier object is
        # redrawn rather than dropping that object afterwards, which would leave an unlabelled
        # fragment in the image.
        for _attempt in range(8):
            diameter = math.exp(rng.uniform(math.log(min_diameter), math.log(max_diameter)))
            radius = diameter / 2
            cx = rng.uniform(radius, width - radius)
            cy = rng.uniform(radius, height - radius)
            mask = _shape_mask(kind, radius, rng.uniform(0, 2 * math.pi), cx, cy,
                               height, width, rng)
            covered = np.bincount(owner[mask] + 1, minlength=len(labels) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(labels) + 1)[1:] - covered
            keeps = [visible[j] >= max(MIN_VISIBLE_FRACTION * full_areas[j], MIN_VISIBLE_PIXELS)
                     for j in range(len(labels))]
            if all(keeps) and mask.sum() >= MIN_VISIBLE_PIXELS:
                break
        else:
            continue
        overlapped = [colours[j] for j in np.flatnonzero(covered)]
        colour = _pick_colour(rng, image[mask], overlapped)
        # Mild linear shading across the object, so objects are not perfectly flat either.
        ys, xs = np.nonzero(mask)
        shade = rng.normal(0, 0.25, 2) / max(radius, 1.0)
        shading = 1 + (xs - cx) * shade[0] + (ys - cy) * shade[1]
        image[ys, xs] = colour * np.clip(shading, 0.8, 1.2)[:, None]
        owner[mask] = len(labels)
        labels.append(kind)
        colours.append(colour)
        full_areas.append(int(mask.sum()))
    image += rng.normal(0, rng.uniform(1, 8), image.shape)
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    objects = []
    for j, label in enumerate(labels):
        mask = owner == j
        area = int(mask.sum())
        if area < max(MIN_VISIBLE_FRACTION * full_areas[j], MIN_VISIBLE_PIXELS):
            continue
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        objects.append({"label": label, "box": box, "mask": mask})
    return rgb, objects
