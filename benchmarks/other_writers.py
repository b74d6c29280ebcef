"""Digits not from MNIST (issues 19 and 30, "robust to other writers"): build three offline
sets and score models on them.

    python benchmarks/other_writers.py fonts --out data/other-writers/fonts.npz [--per-font 2] [--seed 0]
    python benchmarks/other_writers.py photo --out data/other-writers/photo.npz [--per-font 1]
                                             [--seed 1]
    python benchmarks/other_writers.py mouse --out data/other-writers/mouse.npz [--registry DIR]
                                             [--per-digit 20] [--seed 0]
    python benchmarks/other_writers.py score [--registry DIR] [--ref production ...]
                                             [--model-file x.keras ...] data/other-writers/*.npz

`fonts` renders 0-9 with Pillow from every TrueType/OpenType file under /usr/share/fonts
that has real, distinct digits (fonts without the ten glyphs, with blank or tofu ones, and
fonts whose digits are pixel for pixel another font's are skipped), several random variants
per font and digit: size, stroke width (thicker with Pillow's stroke, thinner by erosion),
slant, a small rotation and the position on the paper. Each is dark ink on light paper, as a
scan or the drawing page's canvas, and becomes 28x28 through `normalize_image`, the reading
every upload goes through. A font counts as handwriting when its Debian package is one of
HANDWRITING_PACKAGES (`dpkg -S`); those few fonts get HANDWRITING_BOOST times the variants.

`photo` draws the same fonts' digits (other dice: seed 1) as a phone photo of paper would
show them (`photograph`): dark ink on grey paper, out of focus, the light uneven across the
page, sensor noise, shrunk to 48-128 pixels and saved as a JPEG of quality 20-80; then
`normalize_image`, as an uploaded photo is read.

`mouse` draws each digit with the mouse on the serving page, in headless Chromium driven by
Selenium (as tests/integration/test_page_browser.py does), from a hand-made stroke template
per digit with random jitter, size, slant, rotation and position; the page sends the canvas
to a real `digits serve --log-dir`, and the 28x28 images the model saw are read back from
the prediction log by each drawing's answer id. Without --registry the service answers with
a tiny random model in a temporary registry (tests/helpers/serving.py): only the images
matter. About 1 s a drawing.

`score` prints a markdown table: per set, the images and each model's accuracy, and for a
set with both kinds of fonts the handwriting and printed rows apart.

Every set is an .npz of `images` (N, 28, 28) uint8 (white digit on black, MNIST format),
`labels` (N,) int64, `fonts` (N,) str (the font file's name, or "mouse") and `handwriting`
(N,) bool. The same --seed builds the same set from the same fonts.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # digits and tests.helpers from this checkout, as run directly

from digits.config import TEST_SHIFTS
from digits.data.normalize import normalize_image

FONT_ROOT = Path("/usr/share/fonts")
FONT_SUFFIXES = {".ttf", ".otf", ".ttc"}  # what ImageFont.truetype reads (Type 1 twins skipped)
DIGITS = "0123456789"
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Debian packages whose fonts imitate handwriting (hand, script, marker, comic lettering);
# everything else under /usr/share/fonts counts as printed type.
HANDWRITING_PACKAGES = {
    "fonts-breip", "fonts-bwht", "fonts-cabinsketch", "fonts-comic-neue", "fonts-dancingscript",
    "fonts-dkg-handwriting", "fonts-ecolier-court", "fonts-femkeklaver", "fonts-humor-sans",
    "fonts-kaushanscript", "fonts-klee", "fonts-kristi", "fonts-leckerli-one", "fonts-lobster",
    "fonts-rufscript", "fonts-sjfonts", "fonts-tomsontalks", "fonts-yusei-magic",
}
PRINTED_PACKAGES = ["fonts-dejavu", "fonts-liberation", "fonts-freefont-ttf",
                    "fonts-urw-base35", "fonts-noto-core"]
# About 25 handwriting files against a few hundred printed ones: more variants each, so the
# handwriting row of the score table rests on some thousand images, not two hundred.
HANDWRITING_BOOST = 4
CHECK_SIZE = 48  # font size of the usability check
SIZES = range(36, 81, 4)  # font sizes of the variants (few, so each font is loaded once per size)
TRIES = 5  # variants drawn for one image before a blank one is an error
KEEP_WHEN_THINNED = 0.4  # share of its ink a glyph must keep to be eroded
# The photo-like set (`photo`): grey levels of paper and ink, the light's change from the
# page's centre to an edge, blur (in hundredths of the canvas), noise (grey levels), the
# photo's side in pixels and its JPEG quality, each drawn uniformly from these ranges.
PHOTO_PAPER, PHOTO_INK, PHOTO_LIGHT = (140, 225), (15, 90), 20.0
PHOTO_BLUR, PHOTO_NOISE, PHOTO_SIDE, PHOTO_QUALITY = (0.3, 1.5), (2, 10), (48, 129), (20, 81)
TOFU = "\uffff"  # a noncharacter: no font maps it, so it renders the font's missing-glyph box

FontAt = Callable[[int], ImageFont.FreeTypeFont]  # a font at a pixel size


@dataclass(frozen=True)
class Font:
    path: Path
    package: str

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def handwriting(self) -> bool:
        return self.package in HANDWRITING_PACKAGES


# --- fonts ------------------------------------------------------------------------------------


def find_fonts(root: Path = FONT_ROOT) -> list[Font]:
    """Every TrueType/OpenType file under `root`, sorted, with its Debian package."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())
    packages = owning_packages(paths)
    return [Font(path, packages.get(str(path), path.parent.name)) for path in paths]


def owning_packages(paths: list[Path]) -> dict[str, str]:
    """path -> Debian package, from one `dpkg -S` call ({} where dpkg is missing)."""
    if not paths:
        return {}
    try:
        # check=False: dpkg exits 1 when some file belongs to no package, and still lists the rest.
        result = subprocess.run(["dpkg", "-S", *map(str, paths)], check=False,
                                capture_output=True, text=True)
    except FileNotFoundError:
        return {}
    owners = {}
    for line in result.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0].split(",")[0].strip()
    return owners


def font_loader(path: Path) -> FontAt:
    """`path` at any size, each size loaded once (truetype parses the file every call)."""
    cache: dict[int, ImageFont.FreeTypeFont] = {}

    def at(size: int) -> ImageFont.FreeTypeFont:
        if size not in cache:
            cache[size] = ImageFont.truetype(str(path), size)
        return cache[size]

    return at


def cmap_problem(path: Path) -> str | None:
    """Why the font's character map has no real digits 0..9 (None if it has), by fontTools
    (installed with matplotlib). Symbol fonts map their glyphs elsewhere (U+F030...), and
    dingbat fonts map the digits' codes to pictures, whose glyph names say so (URW's
    D050000L: a105, a17, ...; a digit is named zero, one.deva, uni0032, ...)."""
    try:
        import logging

        from fontTools.ttLib import TTFont
    except ImportError:  # the rendering checks alone then
        return None
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # its notes on harmless table quirks
    try:
        with TTFont(str(path), fontNumber=0, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except Exception:  # noqa: BLE001 - any file fontTools cannot read is not usable
        return "unreadable by fontTools"
    if not all(ord(digit) in cmap for digit in DIGITS):
        return "no digit glyphs in its cmap"
    for digit, name in zip(DIGITS, DIGIT_NAMES):
        glyph = cmap[ord(digit)].lower()
        # fontTools names the glyphs of a font without names glyphNNNNN: nothing to go by.
        if not glyph.startswith((name, f"uni{ord(digit):04x}", f"u{ord(digit):04x}", "glyph")):
            return "digits mapped to other glyphs (symbol or dingbat font)"
    return None


def glyph_bitmap(font: ImageFont.FreeTypeFont, text: str) -> bytes:
    """`text` rendered plainly, cropped to its ink: equal bytes mean the same glyph."""
    side = CHECK_SIZE * 3
    image = Image.new("L", (side, side), 0)
    ImageDraw.Draw(image).text((side // 2, side // 2), text, fill=255, font=font, anchor="mm")
    box = image.getbbox()
    if box is None:
        return b""
    crop = image.crop(box)
    return f"{crop.width}x{crop.height}:".encode() + crop.tobytes()  # size too: same bytes, other shape


def unusable_reason(font_at: FontAt) -> str | None:
    """Why the font's digits cannot be used (None if they can): blank, the tofu box, or two
    digits alike (a dingbat or symbol font mapping digits to one shape)."""
    try:
        font = font_at(CHECK_SIZE)
        bitmaps = [glyph_bitmap(font, digit) for digit in DIGITS]
        tofu = glyph_bitmap(font, TOFU)
    except OSError as error:  # FreeType refuses the file, or a glyph
        return f"unreadable ({error})"
    if not all(bitmaps):
        return "blank digits"
    if tofu in bitmaps:
        return "digits render as the missing-glyph box"
    if len(set(bitmaps)) < len(DIGITS):
        return "digits not distinct"
    return None


def digits_signature(font_at: FontAt) -> int:
    """A hash of the ten plain digits: fonts sharing it (Noto's script fonts copy Noto Sans's
    Latin digits) would only repeat each other's images."""
    font = font_at(CHECK_SIZE)
    return zlib.crc32(b"|".join(glyph_bitmap(font, digit) for digit in DIGITS))


def usable_fonts(fonts: list[Font]) -> tuple[list[Font], dict[str, int]]:
    """The fonts to render, and how many were skipped for each reason."""
    kept, skipped, seen = [], {}, set()
    for font in fonts:
        font_at = font_loader(font.path)
        reason = cmap_problem(font.path) or unusable_reason(font_at)
        if reason is None:
            signature = digits_signature(font_at)
            reason = "same digits as a font before it" if signature in seen else None
            seen.add(signature)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            kept.append(font)
    return kept, skipped


def render_digit(font_at: FontAt, digit: int, rng: np.random.Generator,
                 photographed: bool = False) -> np.ndarray:
    """One random variant of `digit`, normalised: (28, 28) uint8, white on black. A variant
    that comes out blank (a hairline at the smallest size) is drawn again, other dice."""
    for _ in range(TRIES - 1):
        try:
            return draw_variant(font_at, digit, rng, photographed)
        except ValueError:
            continue
    return draw_variant(font_at, digit, rng, photographed)


def draw_variant(font_at: FontAt, digit: int, rng: np.random.Generator,
                 photographed: bool = False) -> np.ndarray:
    """Ink on paper read as every upload is; ValueError if blank. `photographed`: the paper
    as a phone camera gives it (`photograph`), else clean white paper."""
    ink = draw_ink(font_at, digit, rng)
    paper = photograph(ink, rng) if photographed else np.asarray(ImageChops.invert(ink))
    return normalize_image(paper)


def draw_ink(font_at: FontAt, digit: int, rng: np.random.Generator) -> Image.Image:
    """One roll of the dice: size, stroke, slant, rotation, place; white ink on black."""
    size = int(rng.choice(SIZES))
    stroke = int(rng.choice([-1, 0, 0, 1, 2]))  # -1: thinner (eroded); 1, 2: thicker
    slant = rng.uniform(-0.35, 0.35)  # horizontal shear, about +-19 degrees
    angle = rng.uniform(-10, 10)
    font = font_at(size)
    width = max(1, round(stroke * size / 40)) if stroke > 0 else 0
    # Placed by the glyph's own box: fonts' line metrics (what anchors use) vary wildly.
    left, top, right, bottom = font.getbbox(DIGITS[digit], stroke_width=width, anchor="ls")
    side = 3 * max(size, right - left, bottom - top)  # room for it after shear and rotation
    offset = rng.uniform(-0.4, 0.4, size=2) * size  # where on the paper it is written
    origin = (side / 2 + offset[0] - (left + right) / 2, side / 2 + offset[1] - (top + bottom) / 2)
    # Ink is drawn white on black (so transforms fill with no ink), paper made at the end.
    ink = Image.new("L", (side, side), 0)
    ImageDraw.Draw(ink).text(origin, DIGITS[digit], fill=255, font=font, anchor="ls",
                             stroke_width=width, stroke_fill=255)
    if stroke < 0:
        thinner = ink.filter(ImageFilter.MinFilter(3))
        # A light font would break up or vanish: it keeps its own strokes then.
        ink = thinner if ink_of(thinner) >= KEEP_WHEN_THINNED * ink_of(ink) else ink
    centre = side / 2
    ink = ink.transform(ink.size, Image.Transform.AFFINE, (1, slant, -slant * centre, 0, 1, 0),
                        resample=Image.Resampling.BILINEAR, fillcolor=0)
    return ink.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)


def photograph(ink: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """`ink` (white on black) as a phone photo of dark ink on grey paper: out of focus, the
    light falling off across the page, sensor noise, then shrunk and saved as a JPEG."""
    side = ink.size[0]
    paper, dark = rng.uniform(*PHOTO_PAPER), rng.uniform(*PHOTO_INK)
    across = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    light = np.add.outer(across * rng.uniform(-1, 1), across * rng.uniform(-1, 1))
    blurred = ink.filter(ImageFilter.GaussianBlur(rng.uniform(*PHOTO_BLUR) * side / 100))
    level = np.asarray(blurred, dtype=np.float32) / 255
    grey = paper + PHOTO_LIGHT * light - level * (paper - dark)
    grey += rng.normal(0.0, rng.uniform(*PHOTO_NOISE), grey.shape)
    small = int(rng.integers(*PHOTO_SIDE))
    photo = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).resize(
        (small, small), Image.Resampling.BILINEAR)
    saved = io.BytesIO()
    photo.save(saved, format="JPEG", quality=int(rng.integers(*PHOTO_QUALITY)))
    with Image.open(saved) as decoded:
        return np.asarray(decoded.convert("L"))


def ink_of(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float32).sum())


def render_font(font_at: FontAt, variants: int, rng: np.random.Generator,
                photographed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`variants` images of each digit 0..9: (10 * variants, 28, 28) uint8 and the labels."""
    labels = np.repeat(np.arange(10), variants)
    images = np.stack([render_digit(font_at, int(label), rng, photographed) for label in labels])
    return images, labels.astype(np.int64)


def font_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per font: adding or removing a font leaves the others' images as they were."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def build_fonts(out: Path, per_font: int, seed: int, photographed: bool = False) -> None:
    fonts, skipped = usable_fonts(find_fonts())
    if not fonts:
        sys.exit(f"no usable fonts under {FONT_ROOT}: apt-get install {' '.join(PRINTED_PACKAGES)}")
    images, labels, names, handwriting = [], [], [], []
    for font in fonts:
        variants = per_font * (HANDWRITING_BOOST if font.handwriting else 1)
        font_images, font_labels = render_font(font_loader(font.path), variants,
                                               font_rng(seed, font.name), photographed)
        images.append(font_images)
        labels.append(font_labels)
        names += [font.name] * len(font_labels)
        handwriting += [font.handwriting] * len(font_labels)
    save_set(out, np.concatenate(images), np.concatenate(labels), np.array(names),
             np.array(handwriting))
    written = sum(font.handwriting for font in fonts)
    print(f"{out}: {sum(map(len, labels))} images from {len(fonts)} fonts "
          f"({len(fonts) - written} printed, {written} handwriting: "
          f"{', '.join(sorted({f.package for f in fonts if f.handwriting}))})")
    for reason, count in sorted(skipped.items()):
        print(f"  skipped {count} font files: {reason}")


def save_set(out: Path, images: np.ndarray, labels: np.ndarray, fonts: np.ndarray,
             handwriting: np.ndarray) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # str arrays, not objects: the set loads with allow_pickle=False.
    np.savez_compressed(out, images=images.astype(np.uint8), labels=labels.astype(np.int64),
                        fonts=fonts.astype(str), handwriting=handwriting.astype(bool))


# --- mouse ------------------------------------------------------------------------------------

# One or two strokes per digit, in a box of -1..1 (x right, y down), as a person draws them.
# A point given twice is a corner: the spline through the points keeps it sharp.
TEMPLATES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.05, -1), (-0.45, -0.75), (-0.6, 0), (-0.4, 0.8), (0.05, 1), (0.5, 0.7),
         (0.6, -0.05), (0.4, -0.8), (0, -0.95)]],
    1: [[(-0.35, -0.55), (0.1, -1), (0.1, -1), (0.05, 1)]],
    2: [[(-0.55, -0.55), (-0.2, -0.95), (0.3, -0.9), (0.55, -0.5), (0.35, 0), (-0.6, 0.9),
         (-0.6, 0.9), (0.65, 0.9)]],
    3: [[(-0.55, -0.8), (0, -1), (0.5, -0.7), (0.4, -0.25), (-0.1, -0.05), (-0.1, -0.05),
         (0.5, 0.25), (0.55, 0.7), (0, 1), (-0.6, 0.75)]],
    4: [[(0.25, -1), (-0.6, 0.35), (-0.6, 0.35), (0.65, 0.35)], [(0.3, -0.35), (0.3, 1)]],
    5: [[(-0.4, -1), (-0.4, -1), (-0.5, -0.1), (-0.5, -0.1), (0.2, -0.2), (0.6, 0.25),
         (0.5, 0.75), (0, 1), (-0.55, 0.8)], [(-0.4, -1), (0.5, -1)]],
    6: [[(0.4, -1), (-0.2, -0.5), (-0.5, 0.2), (-0.4, 0.8), (0, 1), (0.45, 0.7), (0.4, 0.2),
         (0, 0), (-0.45, 0.3)]],
    7: [[(-0.6, -0.9), (0.6, -0.9), (0.6, -0.9), (-0.1, 1)]],
    8: [[(0.4, -0.7), (0, -1), (-0.45, -0.7), (-0.3, -0.25), (0.35, 0.2), (0.5, 0.65), (0, 1),
         (-0.5, 0.65), (-0.35, 0.2), (0.3, -0.25), (0.45, -0.7)]],
    9: [[(0.45, -0.55), (0.1, -1), (-0.4, -0.8), (-0.45, -0.3), (0, -0.05), (0.45, -0.5),
         (0.45, -0.5), (0.4, 0.3), (0.3, 1)]],
}
PAD_HALF = 140  # the page's canvas is 280 x 280 CSS pixels; offsets are from its centre
PAD_MARGIN = 8  # keep the pointer this far inside the canvas (it must stay on the element)
STEP_PX = 14  # pointer moves this far apart along a stroke, as a fast hand's events come
SERVE_STARTUP_S = 120  # the service imports TensorFlow to load its first model
PAGE_S = 30  # an answer on the page


def spline(points: np.ndarray, per_segment: int) -> np.ndarray:
    """Catmull-Rom through `points` (k, 2): a smooth stroke that passes every point."""
    padded = np.vstack([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    parts = []
    for p0, p1, p2, p3 in zip(padded, padded[1:], padded[2:], padded[3:]):
        parts.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                            + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
    return np.vstack([*parts, points[-1:]])


def jitter_strokes(digit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The digit's template with this sample's hand: strokes as (n, 2) pixel offsets from the
    canvas centre, all inside the canvas."""
    half_height = rng.uniform(55, 115)  # the page's pen is 18 px: small digits come out bold
    width = half_height * rng.uniform(0.75, 1.25)
    slant, angle = rng.uniform(-0.35, 0.35), np.radians(rng.uniform(-12, 12))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    strokes = []
    for template in TEMPLATES[digit]:
        points = np.array(template) + rng.normal(0, 0.05, size=(len(template), 2))
        points = points * [width, half_height]
        points[:, 0] -= slant * points[:, 1]  # y grows downwards: the top leans right
        strokes.append(points @ rotation.T)
    low = np.min([s.min(axis=0) for s in strokes], axis=0)
    high = np.max([s.max(axis=0) for s in strokes], axis=0)
    room = PAD_HALF - PAD_MARGIN
    scale = min(1.0, 2 * room / max(high - low))  # shrink what a wide slant pushed out
    strokes = [s * scale for s in strokes]
    low, high = low * scale, high * scale
    shift = np.array([rng.uniform(-room - lo, room - hi) for lo, hi in zip(low, high)])
    return [dense_stroke(s + shift) for s in strokes]


def dense_stroke(points: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(np.diff(points, axis=0), axis=1).sum()
    per_segment = max(2, int(length / STEP_PX / max(1, len(points) - 1)) + 1)
    limit = PAD_HALF - PAD_MARGIN
    return np.clip(np.round(spline(points, per_segment)), -limit, limit).astype(int)


def draw_strokes(session, canvas, strokes: list[np.ndarray]) -> None:
    """Press, move, release per stroke (pointer events, as a person makes them)."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(session, duration=10)  # 10 ms a move, not Selenium's 250
    for stroke in strokes:
        chain.move_to_element_with_offset(canvas, *map(int, stroke[0])).click_and_hold()
        for x, y in stroke[1:]:
            chain.move_to_element_with_offset(canvas, int(x), int(y))
        chain.release()
    chain.perform()


# Wraps the page's showPrediction to note each shown answer's id under its request number;
# the page shows only the answer to its latest request (`sent`), so the entry for the
# `sent` read after the last stroke is the whole drawing's answer, not a stroke's.
RECORD_ANSWERS = """
window.answersBySent = {};
const show = showPrediction;
showPrediction = function (body) {
  window.answersBySent[sent] = body.predictions[0].id || null;
  return show(body);
};
"""
# Resolves after the page's own 0 ms timer from the last pointerup (its final predict), so
# `sent` is the drawing's last request number.
LAST_REQUEST = "const done = arguments[arguments.length - 1]; setTimeout(() => done(sent), 50);"


def answer_id(session, number: int) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    found = WebDriverWait(session, PAGE_S, poll_frequency=0.05).until(
        lambda s: s.execute_script(f"return window.answersBySent[{number}] !== undefined;"))
    identity = found and session.execute_script(f"return window.answersBySent[{number}];")
    if not identity:
        sys.exit("the page's answer has no id: is the service running with --log-dir?")
    return identity


def open_page(session, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    session.get(url)
    WebDriverWait(session, PAGE_S).until(
        lambda s: s.find_element(By.ID, "status").text not in ("", "connecting…"))
    session.execute_script(RECORD_ANSWERS)


def draw_all(url: str, labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Each label drawn on the page, in order; the log id of each drawing's answer."""
    from selenium.webdriver.common.by import By

    ids = []
    with chromium() as session:
        open_page(session, url)
        canvas, clear = session.find_element(By.ID, "pad"), session.find_element(By.ID, "clear")
        for count, label in enumerate(labels, 1):
            clear.click()
            draw_strokes(session, canvas, jitter_strokes(int(label), rng))
            ids.append(answer_id(session, session.execute_async_script(LAST_REQUEST)))
            if count % 50 == 0:
                print(f"  {count}/{len(labels)} drawn", flush=True)
    return ids


@contextmanager
def chromium() -> Iterator:
    """Headless Debian Chromium with its chromedriver, as the page's browser test runs it."""
    from tests.helpers.browser import MISSING, browser_paths, headless_chromium

    paths = browser_paths()
    if not paths:
        sys.exit(MISSING)
    with headless_chromium(*paths) as session:
        yield session


@contextmanager
def serving(registry: Path, logs: Path, log_file: Path) -> Iterator[str]:
    """A `digits serve --log-dir` on a free loopback port until the block ends: its URL."""
    import signal

    import httpx

    from tests.helpers.processes import free_port

    port = free_port()
    command = [sys.executable, "-m", "digits", "serve", "--port", str(port), "--registry",
               str(registry), "--log-dir", str(logs), "--no-access-log"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    url = f"http://127.0.0.1:{port}"
    with log_file.open("ab") as out:
        # Its own session, so stopping it stops the workers it may start.
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVE_STARTUP_S
        while not ready(httpx, f"{url}/readyz"):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"digits serve not ready:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ready(httpx, probe: str) -> bool:
    try:
        return httpx.get(probe, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def tiny_registry(root: Path) -> Path:
    """A registry whose production is a 784-10 model with random weights (the tests'): the
    page needs an answer with an id, whatever digit it says."""
    from digits.registry.store import Registry
    from tests.helpers.serving import publish_model, save_tiny_model

    registry = Registry(root / "registry")
    publish_model(registry, save_tiny_model(root / "tiny.keras", 1))
    return registry.root


def build_mouse(out: Path, registry: Path | None, per_digit: int, seed: int) -> None:
    from digits.monitoring.reader import read_log

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), per_digit))  # digits mixed, as people come
    with tempfile.TemporaryDirectory(prefix="other-writers-") as work:
        work = Path(work)
        registry = registry or tiny_registry(work)
        with serving(registry, work / "log", work / "serve.log") as url:
            started = time.monotonic()
            ids = draw_all(url, labels, rng)
        logged = read_log(work / "log")
        row_of = {identity: row for row, identity in enumerate(logged.ids)}
        missing = [identity for identity in ids if identity not in row_of]
        if missing:
            sys.exit(f"{len(missing)} answers are not in the prediction log, e.g. {missing[0]}")
        images = logged.images[[row_of[identity] for identity in ids]]
    save_set(out, images, labels, np.full(len(labels), "mouse"), np.ones(len(labels), bool))
    print(f"{out}: {len(labels)} drawings ({per_digit} per digit) in "
          f"{time.monotonic() - started:.0f} s; {len(logged)} answers logged in all")


# --- score ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subset:
    name: str
    labels: np.ndarray
    rows: np.ndarray  # a boolean mask over the set's images


def load_set(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def subsets(name: str, data: dict[str, np.ndarray]) -> list[Subset]:
    """The whole set, then its handwriting and printed parts where it has both."""
    every = np.ones(len(data["labels"]), bool)
    parts = [Subset(name, data["labels"], every)]
    written = data["handwriting"]
    if written.any() and not written.all():
        parts += [Subset(f"{name} (handwriting)", data["labels"], written),
                  Subset(f"{name} (printed)", data["labels"], ~written)]
    return parts


def load_models(refs: list[str], files: list[Path], registry: Path | None,
                shifts: str = "none") -> dict[str, Callable]:
    """Column name -> a function from (N, 28, 28) pixels 0..255 to (N, 10) probabilities.

    `shifts` wraps each model file as `--test-shifts` would have exported it; a file that
    already averages over shifts (a run with test shifts saved it so) is refused."""
    import digits

    models: dict[str, Callable] = {}
    for ref in refs:
        model = digits.load(ref, registry)  # verified, ONNX where the version has it
        models[f"{ref} ({model.version})" if model.version != ref else ref] = model.predict
    for path in files:
        import keras  # only for files: a registry's ONNX versions need no TensorFlow

        from digits.model.architectures import average_shifts
        from digits.model.export import inference_model

        model = keras.saving.load_model(path, safe_mode=True)
        if shifts != "none":
            model = average_shifts(inference_model(model), shifts)
        models[path.name + ("" if shifts == "none" else f" ({shifts})")] = lambda images, model=model: np.asarray(
            model.predict(images, batch_size=1024, verbose=0))
    return models


def score(paths: list[Path], refs: list[str], files: list[Path], registry: Path | None,
          shifts: str = "none") -> None:
    models = load_models(refs or ([] if files else ["production"]), files, registry, shifts)
    rows = [f"| set | images | {' | '.join(models)} |",
            f"| --- | ---: |{' ---: |' * len(models)}"]
    for path in paths:
        data = load_set(path)
        images = data["images"].astype(np.float32)
        answers = {name: predict(images).argmax(axis=1) for name, predict in models.items()}
        for part in subsets(path.stem, data):
            right = [np.mean(answers[name][part.rows] == part.labels[part.rows])
                     for name in models]
            rows.append(f"| {part.name} | {part.rows.sum()} | "
                        + " | ".join(f"{value:.4f}" for value in right) + " |")
    print("\n".join(rows))


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rendered = {"fonts": ("render digits from the installed fonts", 2, 0),
                "photo": ("the fonts' digits as phone photos of paper", 1, 1)}
    for name, (text, per_font, seed) in rendered.items():
        command = commands.add_parser(name, help=text)
        command.add_argument("--out", type=Path, default=ROOT / f"data/other-writers/{name}.npz")
        command.add_argument("--per-font", type=int, default=per_font,
                             help=f"variants per digit and printed font (x{HANDWRITING_BOOST} "
                                  "for handwriting fonts)")
        command.add_argument("--seed", type=int, default=seed)
    mouse = commands.add_parser("mouse", help="draw digits with the mouse on the serving page")
    mouse.add_argument("--out", type=Path, default=ROOT / "data/other-writers/mouse.npz")
    mouse.add_argument("--registry", type=Path, default=None,
                       help="registry to serve (default: a tiny random model, temporary)")
    mouse.add_argument("--per-digit", type=int, default=20)
    mouse.add_argument("--seed", type=int, default=0)
    scoring = commands.add_parser("score", help="accuracy of models on the sets")
    scoring.add_argument("sets", type=Path, nargs="+")
    scoring.add_argument("--registry", type=Path, default=None)
    scoring.add_argument("--ref", action="append", default=[],
                         help="registry version or alias (repeatable; default production)")
    scoring.add_argument("--model-file", type=Path, action="append", default=[],
                         help="a .keras file (repeatable)")
    scoring.add_argument("--test-shifts", default="none", choices=TEST_SHIFTS,
                         help="average each --model-file over moved images, as "
                              "`digits run --test-shifts` exports it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command in ("fonts", "photo"):
        build_fonts(args.out, args.per_font, args.seed, photographed=args.command == "photo")
    elif args.command == "mouse":
        build_mouse(args.out, args.registry, args.per_digit, args.seed)
    else:
        score(args.sets, args.ref, args.model_file, args.registry, args.test_shifts)


if __name__ == "__main__":
    main()
