"""Things that are not digits (issue 30): build an offline set the model never trained
on, and score how often each model's "not a digit" rule flags them and MNIST test digits.

    python benchmarks/not_a_digit.py build [--out data/not-a-digit.npz] [--per-kind 1000] [--seed 7]
    python benchmarks/not_a_digit.py score [--registry DIR] [--ref production ...]
                                           [--digits data/other-writers/fonts.npz ...] SET.npz

`build` draws five kinds, each kept apart from what training draws (digits.data.negatives):
- glyphs: letters and symbols from the typefaces under /usr/share/fonts other than DejaVu
  (training renders matplotlib's DejaVu, STIX and Computer Modern);
- shapes: the shape families training draws, with another seed;
- new shapes: families training never draws (lightning bolts, chevrons, waves, nested
  squares, a triangle in a circle);
- scribbles: training's scribbles, another seed;
- photos: crops of scikit-learn's sample pictures (training crops matplotlib's).

`score` prints, per model: MNIST test accuracy and the share of its digits flagged; the
share of each kind flagged (at the version's recorded threshold, and at the threshold of
its rule's score that flags exactly 1% of MNIST test, the issue's yardstick); the same for
other digit sets given with --digits (those should not be flagged); and, as the
alternatives considered, the top probability (the rule before the spread) and a
Mahalanobis score on the penultimate features (class means and a shared covariance from
scikit-learn's EmpiricalCovariance, fitted on MNIST train), at 1% of MNIST test.

The .npz holds `images` (N, 28, 28) uint8, white on black, and `kinds` (N,) str.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # digits from this checkout, as run directly

from digits.data.negatives import (
    CANVAS,
    crop_photo,
    draw_glyph,
    draw_scribble,
    draw_shape,
    glyphs_of,
    ink_canvas,
    polar,
    retry,
)

FONT_ROOT = Path("/usr/share/fonts")
TRAINING_FAMILIES = ("DejaVu",)  # the typefaces training renders, as file name prefixes
MIN_GLYPHS = 20  # a font with fewer of the glyphs is a symbol or icon font
KINDS = ("glyphs", "shapes", "new shapes", "scribbles", "photos")


def held_out_fonts() -> list[ImageFont.FreeTypeFont]:
    paths = sorted(p for p in FONT_ROOT.rglob("*") if p.suffix.lower() in {".ttf", ".otf"}
                   and not p.name.startswith(TRAINING_FAMILIES))
    fonts = [ImageFont.truetype(str(path), 48) for path in paths]
    return [font for font in fonts if len(glyphs_of(font)) >= MIN_GLYPHS]


def held_out_photos() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(image).convert("L") for image in load_sample_images().images]


def draw_new_shape(rng: np.random.Generator) -> Image.Image:
    """A shape of a family training never draws (digits.data.negatives.SHAPES has none)."""
    canvas, draw = ink_canvas()
    width = int(rng.integers(3, 9))
    c, r = CANVAS / 2, CANVAS * rng.uniform(0.25, 0.4)
    kind = rng.integers(5)
    if kind == 0:  # lightning bolt
        draw.polygon([(c + r * 0.2, c - r), (c - r * 0.5, c + r * 0.1), (c, c + r * 0.1),
                      (c - r * 0.2, c + r), (c + r * 0.5, c - r * 0.1), (c, c - r * 0.1)],
                     fill=255)
    elif kind == 1:  # chevrons
        for dx in np.linspace(-r, r, int(rng.integers(2, 4))):
            draw.line((c + dx - r / 3, c - r / 2, c + dx, c, c + dx - r / 3, c + r / 2),
                      fill=255, width=width, joint="curve")
    elif kind == 2:  # a wave
        xs = np.linspace(c - r, c + r, 60)
        ys = c + r / 3 * np.sin((xs - c) / r * np.pi * rng.uniform(1.5, 3))
        draw.line(list(zip(xs, ys)), fill=255, width=width, joint="curve")
    elif kind == 3:  # nested squares
        for scale in (1.0, 0.55):
            draw.rectangle((c - r * scale, c - r * scale, c + r * scale, c + r * scale),
                           outline=255, width=width)
    else:  # a triangle in a circle
        draw.ellipse((c - r, c - r, c + r, c + r), outline=255, width=width)
        draw.polygon(polar(c, r * 0.8, np.pi / 2 + np.arange(3) * 2 * np.pi / 3), outline=255,
                     width=width)
    return canvas.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)


def build(out: Path, per_kind: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fonts, photos = held_out_fonts(), held_out_photos()
    if not fonts:
        sys.exit(f"no held-out fonts under {FONT_ROOT}: apt-get install fonts-liberation")
    draw = {
        "glyphs": lambda: draw_glyph(fonts[rng.integers(len(fonts))], rng),
        "shapes": lambda: draw_shape(rng),
        "new shapes": lambda: draw_new_shape(rng),
        "scribbles": lambda: draw_scribble(rng),
        "photos": lambda: crop_photo(photos[rng.integers(len(photos))], rng),
    }
    images = np.stack([retry(draw[kind]) for kind in KINDS for _ in range(per_kind)])
    kinds = np.repeat(np.array(KINDS), per_kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, kinds=kinds)
    print(f"{out}: {len(images)} images, {per_kind} per kind, from {len(fonts)} fonts")


def mnist():
    from digits.data.ingest import load_mnist
    from digits.environment import default_store_dir

    return load_mnist(None, default_store_dir())


def mahalanobis_scorer(model, train_images: np.ndarray, train_labels: np.ndarray):
    """Minus the smallest Mahalanobis distance to a class mean of the penultimate features
    (Lee et al., 2018), with one covariance shared by the classes: higher is more digit-like."""
    from sklearn.covariance import EmpiricalCovariance

    from digits.checks.drift import penultimate_features

    features = penultimate_features(model)
    train, _ = features(train_images)
    means = np.stack([train[train_labels == d].mean(axis=0) for d in range(10)])
    shared = EmpiricalCovariance(assume_centered=True).fit(train - means[train_labels])

    def score(images: np.ndarray) -> np.ndarray:
        x, _ = features(images)
        return -np.min([shared.mahalanobis(x - mean) for mean in means], axis=0)

    return score


def flagged_at_one_percent(digit_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """The share of `other_scores` under the score that flags 1% of the digits."""
    return float(np.mean(other_scores < np.quantile(digit_scores, 0.01)))


def score(path: Path, refs: list[str], registry: Path | None, digit_sets: list[Path],
          train_rows: int) -> None:
    import digits
    from digits.model.not_a_digit import flags, top_probability
    from digits.model.not_a_digit import score as rule_score
    from digits.registry.load import load_model

    with np.load(path, allow_pickle=False) as data:
        negatives, kinds = data["images"].astype(np.float32), data["kinds"]
    data = mnist()
    test, labels = data.test_images.astype(np.float32), data.test_labels
    others = {}
    for other in digit_sets:
        with np.load(other, allow_pickle=False) as loaded:
            others[other.stem] = loaded["images"].astype(np.float32)
    for ref in refs or ["production"]:
        model = digits.load(ref, registry)
        rule = model.manifest.get("not_a_digit")
        digit_probs, negative_probs = model.predict(test), model.predict(negatives)
        ours, negative_ours = rule_score(digit_probs, rule), rule_score(negative_probs, rule)
        threshold = f"{rule['threshold']:.4f} ({rule['method']})" if rule else "none"
        print(f"\n### {ref} ({model.version}), threshold {threshold}\n")
        print("| images | rows | flagged (version's rule) | flagged at 1% of MNIST test |")
        print("| --- | ---: | ---: | ---: |")
        accuracy = np.mean(digit_probs.argmax(axis=1) == labels)
        print(f"| MNIST test (accuracy {accuracy:.4f}) | {len(test)} | "
              f"{flags(digit_probs, rule).mean():.4f} | 0.0100 |")
        for name, images in others.items():
            probs = model.predict(images)
            print(f"| {name} (digits) | {len(images)} | {flags(probs, rule).mean():.4f} | "
                  f"{flagged_at_one_percent(ours, rule_score(probs, rule)):.4f} |")
        for kind in ("all", *KINDS):
            rows = np.ones(len(kinds), bool) if kind == "all" else kinds == kind
            print(f"| {kind} | {rows.sum()} | {flags(negative_probs[rows], rule).mean():.4f} | "
                  f"{flagged_at_one_percent(ours, negative_ours[rows]):.4f} |")
        top, negative_top = top_probability(digit_probs), top_probability(negative_probs)
        print("\nThe top probability (the rule before the spread), at 1% of MNIST test: "
              + ", ".join(f"{kind} {flagged_at_one_percent(top, negative_top[kinds == kind]):.4f}"
                          for kind in KINDS)
              + f"; all {flagged_at_one_percent(top, negative_top):.4f}")
        pick = np.random.default_rng(0).permutation(len(data.train_labels))[:train_rows]
        maha = mahalanobis_scorer(load_model(ref, registry), data.train_images[pick].astype(
            np.float32), data.train_labels[pick])
        digit_maha, negative_maha = maha(test), maha(negatives)
        print(f"\nMahalanobis on penultimate features ({train_rows} train images), at 1% of "
              "MNIST test: " + ", ".join(
                  f"{kind} {flagged_at_one_percent(digit_maha, negative_maha[kinds == kind]):.4f}"
                  for kind in KINDS)
              + f"; all {flagged_at_one_percent(digit_maha, negative_maha):.4f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    building = commands.add_parser("build", help="draw the held-out set")
    building.add_argument("--out", type=Path, default=ROOT / "data/not-a-digit.npz")
    building.add_argument("--per-kind", type=int, default=1000)
    building.add_argument("--seed", type=int, default=7)
    scoring = commands.add_parser("score", help="flagged shares per model")
    scoring.add_argument("set", type=Path)
    scoring.add_argument("--registry", type=Path, default=None)
    scoring.add_argument("--ref", action="append", default=[],
                         help="registry version or alias (repeatable; default production)")
    scoring.add_argument("--digits", type=Path, action="append", default=[],
                         help="an .npz of other digits (benchmarks/other_writers.py; repeatable)")
    scoring.add_argument("--train-rows", type=int, default=10_000,
                         help="MNIST train images the Mahalanobis means and covariance fit on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "build":
        build(args.out, args.per_kind, args.seed)
    else:
        score(args.set, args.ref, args.registry, args.digits, args.train_rows)


if __name__ == "__main__":
    main()
