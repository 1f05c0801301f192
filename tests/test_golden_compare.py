"""Golden metrics: max abs difference, PSNR and SSIM, and the pass/fail rule over thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdflow.golden.compare import Thresholds, compare, gaussian_window, max_abs_diff, psnr, ssim


def _image(seed: int = 0, shape: tuple[int, ...] = (1, 3, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def _ssim_by_windows(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM written out window by window, as in Wang et al. 2004, to check the vectorised one."""
    taps = gaussian_window(size, sigma)
    weights = np.outer(taps, taps)
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for x_plane, y_plane in zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), strict=True):
        for top in range(x_plane.shape[0] - size + 1):
            for left in range(x_plane.shape[1] - size + 1):
                x = x_plane[top : top + size, left : left + size]
                y = y_plane[top : top + size, left : left + size]
                mx, my = (weights * x).sum(), (weights * y).sum()
                vx = (weights * (x - mx) ** 2).sum()
                vy = (weights * (y - my) ** 2).sum()
                cov = (weights * (x - mx) * (y - my)).sum()
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_identical_images_have_zero_difference_infinite_psnr_and_ssim_one():
    image = _image()
    assert max_abs_diff(image, image) == 0.0
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_max_abs_diff_is_the_largest_single_pixel_change():
    golden = _image()
    actual = golden.copy()
    actual[0, 1, 5, 7] += 0.25
    actual[0, 2, 9, 9] -= 0.125
    assert max_abs_diff(golden, actual) == pytest.approx(0.25)


def test_psnr_of_a_uniform_offset_is_minus_twenty_log10_of_the_offset():
    golden = _image()
    assert psnr(golden, golden + 0.01) == pytest.approx(40.0, abs=1e-9)


def test_ssim_matches_the_window_by_window_definition():
    golden = _image(1, (1, 2, 20, 24))
    actual = np.clip(golden + 0.1 * _image(2, golden.shape) - 0.05, 0, 1)
    assert ssim(golden, actual) == pytest.approx(_ssim_by_windows(golden, actual), abs=1e-12)


def test_ssim_drops_for_unrelated_noise_images():
    assert ssim(_image(1), _image(2)) < 0.1


def test_ssim_works_on_images_smaller_than_the_window():
    golden = _image(3, (1, 1, 6, 9))
    assert ssim(golden, golden) == pytest.approx(1.0)
    assert ssim(golden, _image(4, (1, 1, 6, 9))) < 0.9


def test_comparison_passes_only_when_every_metric_is_within_its_threshold():
    golden = _image()
    nudged = golden + 1e-4
    assert compare("x", golden, golden, Thresholds()).passed
    assert compare("x", golden, nudged, Thresholds(max_abs=1e-3, psnr=60, ssim=0.99)).passed
    failed = compare("x", golden, nudged, Thresholds(max_abs=1e-5, psnr=60, ssim=0.99))
    assert not failed.passed
    assert [m.name for m in failed.metrics if not m.passed] == ["max_abs"]


def test_comparison_of_different_shapes_fails_with_a_reason():
    result = compare("x", _image(shape=(1, 3, 8, 8)), _image(shape=(1, 3, 16, 8)), Thresholds())
    assert not result.passed
    assert "shape (1, 3, 16, 8) differs from golden (1, 3, 8, 8)" in result.problem


def test_nan_in_the_actual_image_fails():
    golden = _image()
    actual = golden.copy()
    actual[0, 0, 0, 0] = np.nan
    assert not compare("x", golden, actual, Thresholds()).passed
