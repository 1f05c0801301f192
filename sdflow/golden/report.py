"""What people look at: golden PNGs, diff images, golden | actual | diff strips and metric tables."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from sdflow.golden.compare import Comparison, Metric

GAP = 4  # pixels between panels of a side-by-side
MIN_PANEL_HEIGHT = 256  # small images are enlarged (nearest neighbour) to at least this height
CAPTION = 16  # pixels of caption above a side-by-side


def to_picture(array: np.ndarray) -> PILImage.Image:
    """An 8-bit picture of a (batch, channels, h, w) array in [0, 1]; batch items side by side."""
    items = [_hwc(item) for item in array]
    return PILImage.fromarray(_row(items, fill=0))


def diff_array(golden: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, float]:
    """A heat map (batch, 3, h, w) of |actual - golden| (max over channels), and the value shown as white.

    The map is scaled so that the largest difference is white (black, red, yellow, white), so even
    a small change is visible; the scale is reported beside the image.
    """
    diff = np.abs(actual.astype(np.float64) - golden.astype(np.float64)).max(axis=1)
    largest = float(diff.max()) if diff.size else 0.0
    level = diff / largest if largest > 0 else diff
    heat = np.stack([np.clip(3 * level - k, 0, 1) for k in range(3)], axis=1)
    return heat.astype(np.float32), largest


def side_by_side(golden: np.ndarray, actual: np.ndarray) -> PILImage.Image:
    """One row per batch item: golden | actual | diff under a caption, enlarged when images are small."""
    heat, largest = diff_array(golden, actual)
    scale = max(1, math.ceil(MIN_PANEL_HEIGHT / golden.shape[-2]))
    rows = []
    for items in zip(golden, actual, heat, strict=True):
        panels = [_enlarge(_hwc(item), scale) for item in items]
        rows.append(_row(panels, fill=255))
    gap = np.full((GAP, rows[0].shape[1], 3), 255, dtype=np.uint8)
    strip = np.concatenate([part for row in rows for part in (gap, row)][1:])
    picture = PILImage.new("RGB", (strip.shape[1], strip.shape[0] + CAPTION), "white")
    picture.paste(PILImage.fromarray(strip), (0, CAPTION))
    draw = ImageDraw.Draw(picture)
    panel = golden.shape[-1] * scale + GAP
    for index, label in enumerate(("golden", "actual", f"|diff| (white = {largest:.2e})")):
        draw.text((index * panel + 2, 3), label, fill="black")
    return picture


def format_table(title: str, comparison: Comparison) -> str:
    """A per-output table: metric, value, threshold, pass/fail (or the reason it could not compare)."""
    verdict = "PASS" if comparison.passed else "FAIL"
    lines = [f"{verdict} {title}: {comparison.name}"]
    if comparison.problem is not None:
        lines.append(f"  {comparison.problem}")
        return "\n".join(lines)
    lines.append(f"  {'metric':<8} {'value':>12}  {'threshold':<13} result")
    for metric in comparison.metrics:
        sign = ">=" if metric.higher_is_better else "<="
        threshold = f"{sign} {_number(metric, metric.threshold)}"
        result = "pass" if metric.passed else "FAIL"
        lines.append(f"  {metric.name:<8} {_number(metric, metric.value):>12}  {threshold:<13} {result}")
    return "\n".join(lines)


def _number(metric: Metric, value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if metric.name == "psnr":
        return f"{value:.2f} dB"
    if metric.name == "ssim":
        return f"{value:.6f}"
    return f"{value:.3e}"


def _hwc(item: np.ndarray) -> np.ndarray:
    """(channels, h, w) floats in [0, 1] -> (h, w, 3) uint8 (one channel becomes grey)."""
    channels = item[:3] if item.shape[0] >= 3 else np.repeat(item[:1], 3, axis=0)
    pixels = np.clip(np.nan_to_num(channels, nan=0.0), 0.0, 1.0) * 255.0
    return np.moveaxis(pixels.round().astype(np.uint8), 0, -1)


def _enlarge(picture: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel as a scale x scale block."""
    return picture.repeat(scale, axis=0).repeat(scale, axis=1)


def _row(items: list[np.ndarray], fill: int) -> np.ndarray:
    """Pictures (h, w, 3) of one height left to right, GAP pixels of ``fill`` between them."""
    if len(items) == 1:
        return items[0]
    gap = np.full((items[0].shape[0], GAP, 3), fill, dtype=np.uint8)
    parts = [part for item in items for part in (item, gap)][:-1]
    return np.concatenate(parts, axis=1)
