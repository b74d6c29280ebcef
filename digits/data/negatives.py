"""Things that are not digits, drawn offline: what the model learns to be unsure about.

Outlier exposure (Hendrycks et al., 2019) trains the model to answer a flat distribution
on images that are no digit, so its answers to such things are near flat, unlike what it
gives digits, and `digits.model.not_a_digit` can flag them by those probabilities alone. The
images come from four kinds, each drawn with Pillow and made 28x28 by `normalize_image`,
the reading every upload goes through:

- glyphs: letters and symbols from the typefaces matplotlib ships (DejaVu and STIX),
  stretched, bent, slanted, thinned or thickened, leaving out those that are written like a digit
  (O, I, l, S, Z, B, g, q, ...);
- shapes: stars, hearts, smileys, arrows, houses, grids, spirals, blobs, polygons,
  crescents, hatching, zigzags, clouds (SHAPES);
- scribbles: a few random smooth strokes;
- photos: random crops of the pictures matplotlib ships as sample data.

Nothing is downloaded, and the same seed draws the same images. benchmarks/not_a_digit.py
scores the rule on other images: other typefaces, other seeds, other photos.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digits.data.normalize import normalize_image

# Latin letters and symbols no one writes as a digit: O/o/Q (0), I/l/i/j/J/T (1, 7),
# Z/z (2), S/s/$/§ (5), G/b/δ (6), B (8), g/q (9), and thin marks (! - | / . , ( ) { }) are
# left out.
GLYPHS = "ACEFHKMNPRUVWXYacdefhkmnprtuvwxy#@&%?+=*<>~€£¥¶αβγελμξπφψωΣΩΔΓΛΞΠΦΨ"
TRAINING_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf",
    "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
)  # not Computer Modern: its own encoding draws other glyphs (a lone accent, a 1-like ¡)
TRAINING_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
KINDS = ("glyphs", "shapes", "scribbles", "photos")
SHARES = (0.4, 0.25, 0.2, 0.15)  # of the negatives, per kind
CANVAS = 96  # side of the square each glyph, shape or scribble is drawn on
WARP_CELLS = 4  # a glyph's warp moves the corners of a WARP_CELLS x WARP_CELLS grid
WARP = 0.06  # how far each corner may move, as a share of the canvas
TRIES = 5  # draws of one image before a blank one is an error
TOFU = "\uffff"  # a noncharacter: a font draws its missing-glyph box for it


def draw_negatives(count: int, seed: int) -> np.ndarray:
    """`count` images (count, 28, 28) uint8, white on black, in KINDS' SHARES, shuffled."""
    rng = np.random.default_rng(seed)
    fonts = [matplotlib_file("fonts/ttf", name) for name in TRAINING_FONTS]
    photos = [load_photo(matplotlib_file("sample_data", name)) for name in TRAINING_PHOTOS]
    draw = {
        "glyphs": lambda: draw_glyph(load_font(fonts[rng.integers(len(fonts))]), rng),
        "shapes": lambda: draw_shape(rng),
        "scribbles": lambda: draw_scribble(rng),
        "photos": lambda: crop_photo(photos[rng.integers(len(photos))], rng),
    }
    kinds = rng.choice(len(KINDS), size=count, p=SHARES)
    images = np.zeros((count, 28, 28), np.uint8)
    for i, kind in enumerate(kinds):
        images[i] = retry(draw[KINDS[kind]])
    return images


def retry(draw) -> np.ndarray:
    """`draw()` normalised; a draw that comes out blank is drawn again, other dice."""
    for _ in range(TRIES - 1):
        try:
            return normalize_image(np.asarray(draw()))
        except ValueError:
            continue
    return normalize_image(np.asarray(draw()))


def matplotlib_file(folder: str, name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / folder / name


@cache
def load_font(path: Path) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), 48)


@cache
def glyphs_of(font: ImageFont.FreeTypeFont) -> str:
    """GLYPHS that `font` really has: drawn, and not its missing-glyph box."""
    tofu = glyph_bitmap(font, TOFU)
    return "".join(c for c in GLYPHS if (bitmap := glyph_bitmap(font, c)) and bitmap != tofu)


def glyph_bitmap(font: ImageFont.FreeTypeFont, text: str) -> bytes:
    """`text` drawn plainly, cropped to its ink: equal bytes mean the same glyph; b"" none."""
    canvas, draw = ink_canvas()
    draw.text((CANVAS / 2, CANVAS / 2), text, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    return b"" if box is None else f"{box}".encode() + canvas.crop(box).tobytes()


def load_photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L")


def ink_canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    return canvas, ImageDraw.Draw(canvas)


def draw_glyph(font: ImageFont.FreeTypeFont, rng: np.random.Generator,
               text: str | None = None, thin: bool = True) -> Image.Image:
    """One glyph of `font` (`text`, or one of GLYPHS it has), white on black, at a random
    size, stroke, slant and rotation; now and then thinner unless not `thin`."""
    canvas, draw = ink_canvas()
    sized = font.font_variant(size=int(rng.integers(36, 64)))
    width = int(rng.choice([0, 0, 1, 2]))
    if text is None:
        choices = glyphs_of(font)
        text = choices[rng.integers(len(choices))]
    draw.text((CANVAS / 2, CANVAS / 2), text, fill=255, font=sized, anchor="mm",
              stroke_width=width, stroke_fill=255)
    if thin and width == 0 and rng.random() < 0.3:  # thinner, as a fine pen writes
        canvas = canvas.filter(ImageFilter.MinFilter(3))
    # Narrower or wider, leaning as italics and hands do: x' = x / stretch + slant * y.
    stretch, slant = rng.uniform(0.7, 1.4), rng.uniform(-0.3, 0.3)
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE,
                              (1 / stretch, slant, CANVAS / 2 * (1 - 1 / stretch - slant),
                               0, 1, 0), resample=Image.Resampling.BILINEAR)
    canvas = warp(canvas, rng)  # and wobbling, as a hand never draws the type's curves
    return canvas.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)


def warp(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """`image` bent smoothly: the corners of a grid over it moved at random (by up to WARP of
    its side), each cell mapped from the quadrilateral its moved corners make."""
    edges = np.linspace(0, CANVAS, WARP_CELLS + 1)
    corners = np.stack(np.meshgrid(edges, edges, indexing="xy"), axis=-1)
    corners[1:-1, 1:-1] += rng.uniform(-WARP, WARP, (WARP_CELLS - 1, WARP_CELLS - 1, 2)) * CANVAS
    mesh = []
    for row in range(WARP_CELLS):
        for col in range(WARP_CELLS):
            box = tuple(int(v) for v in (edges[col], edges[row], edges[col + 1], edges[row + 1]))
            # PIL's quad: the source's upper left, lower left, lower right, upper right
            quad = [corners[row, col], corners[row + 1, col], corners[row + 1, col + 1],
                    corners[row, col + 1]]
            mesh.append((box, tuple(float(v) for point in quad for v in point)))
    return image.transform(image.size, Image.Transform.MESH, mesh,
                           resample=Image.Resampling.BILINEAR)


def draw_shape(rng: np.random.Generator) -> Image.Image:
    """One of SHAPES, white on black, at a random size, line width and rotation."""
    canvas, draw = ink_canvas()
    width, r = int(rng.integers(3, 9)), CANVAS * rng.uniform(0.25, 0.4)
    SHAPES[rng.integers(len(SHAPES))](draw, CANVAS / 2, r, width, rng)
    return canvas.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)


def star(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    draw.polygon(polar(c, np.where(np.arange(10) % 2, r * 0.45, r), angles), outline=255,
                 width=width, fill=255 if rng.random() < 0.5 else None)


def heart(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    draw.ellipse((c - r, c - r / 2, c, c + r / 2), fill=255)
    draw.ellipse((c, c - r / 2, c + r, c + r / 2), fill=255)
    draw.polygon([(c - r * 0.97, c + r * 0.1), (c + r * 0.97, c + r * 0.1), (c, c + r * 1.2)],
                 fill=255)


def smiley(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    draw.ellipse((c - r, c - r, c + r, c + r), outline=255, width=width)
    for dx in (-0.4, 0.4):
        draw.ellipse((c + dx * r - width, c - 0.35 * r - width, c + dx * r + width,
                      c - 0.35 * r + width), fill=255)
    draw.arc((c - 0.6 * r, c - 0.5 * r, c + 0.6 * r, c + 0.6 * r), 20, 160, fill=255,
             width=width)


def arrow(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    draw.line((c - r, c, c + r * 0.5, c), fill=255, width=width)
    draw.polygon([(c + r, c), (c + r * 0.4, c - r * 0.45), (c + r * 0.4, c + r * 0.45)],
                 fill=255)


def house(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    draw.rectangle((c - r * 0.7, c - r * 0.1, c + r * 0.7, c + r), outline=255, width=width)
    draw.line((c - r * 0.9, c, c, c - r, c + r * 0.9, c), fill=255, width=width)


def grid(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    for t in np.linspace(-r, r, int(rng.integers(3, 6))):
        draw.line((c - r, c + t, c + r, c + t), fill=255, width=width)
        draw.line((c + t, c - r, c + t, c + r), fill=255, width=width)


def spiral(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    angles = np.linspace(0, rng.uniform(3, 5) * np.pi, 80)
    draw.line(polar(c, r * angles / angles[-1], angles), fill=255, width=width, joint="curve")


def blob(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
    draw.polygon(polar(c, r * rng.uniform(0.5, 1.0, len(angles)), angles), fill=255)


def polygon(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    """A polygon's outline, 3 to 8 sides (a square's or hexagon's is no 0: corners)."""
    sides = int(rng.integers(3, 9))
    draw.polygon(polar(c, r, np.arange(sides) * 2 * np.pi / sides + rng.uniform(0, 6.3)),
                 outline=255, width=width)


def crescent(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    draw.ellipse((c - r, c - r, c + r, c + r), fill=255)
    shift = r * rng.uniform(0.3, 0.6)
    draw.ellipse((c - r + shift, c - r, c + r + shift, c + r), fill=0)


def hatching(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    for t in np.linspace(-r, r, int(rng.integers(4, 8))):
        draw.line((c - r, c + t - r / 2, c + r, c + t + r / 2), fill=255, width=width)


def zigzag(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    xs = np.linspace(c - r, c + r, int(rng.integers(5, 9)))
    ys = c + np.where(np.arange(len(xs)) % 2, -r / 2, r / 2)
    draw.line(list(zip(xs, ys)), fill=255, width=width, joint="curve")


def cloud(draw: ImageDraw.ImageDraw, c: float, r: float, width: int, rng) -> None:
    for _ in range(int(rng.integers(3, 6))):
        x, y, s = c + rng.uniform(-r, r) * 0.6, c + rng.uniform(-r, r) * 0.3, r * 0.45
        draw.ellipse((x - s, y - s, x + s, y + s), fill=255)


SHAPES = (star, heart, smiley, arrow, house, grid, spiral, blob, polygon, crescent, hatching,
          zigzag, cloud)


def polar(centre: float, radii, angles: np.ndarray) -> list[tuple[float, float]]:
    return list(zip(centre + radii * np.cos(angles), centre - radii * np.sin(angles)))


def draw_scribble(rng: np.random.Generator) -> Image.Image:
    """2-4 strokes, each through 5-9 random points smoothed by corner cutting."""
    canvas, draw = ink_canvas()
    for _ in range(rng.integers(2, 5)):
        points = rng.uniform(CANVAS * 0.15, CANVAS * 0.85, size=(int(rng.integers(5, 10)), 2))
        draw.line([tuple(p) for p in smooth(points)], fill=255, width=int(rng.integers(3, 9)),
                  joint="curve")
    return canvas


def smooth(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Chaikin's corner cutting: each round puts two points on every segment, at 1/4, 3/4."""
    for _ in range(rounds):
        ends = points[:-1], points[1:]
        cut = np.empty((2 * len(points) - 2, 2))
        cut[0::2], cut[1::2] = 0.75 * ends[0] + 0.25 * ends[1], 0.25 * ends[0] + 0.75 * ends[1]
        points = cut
    return points


def crop_photo(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(24, min(photo.size) + 1))
    left = int(rng.integers(photo.width - side + 1))
    top = int(rng.integers(photo.height - side + 1))
    return photo.crop((left, top, left + side, top + side))
