"""PNG figures of a seeded sweep (muva.viz.sweep_plots): intervals, differences, CMC curves.

The PNG tests need matplotlib (the ``plots`` extra) and are skipped without it; the
missing-matplotlib path is simulated and always runs.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from muva.utils.errors import MuvaError
from muva.viz import sweep_plots
from muva.viz.sweep_plots import PlotsUnavailable, SweepPlotError, cmc_curves, difference_bars, interval_bars

NAN = math.nan
TAB_BLUE = (0x1F, 0x77, 0xB4)  # the first variant's colour (tab10)
TAB_ORANGE = (0xFF, 0x7F, 0x0E)  # the second's
GREEN, RED, GREY = (0x2A, 0x9D, 0x4B), (0xD1, 0x45, 0x2F), (0x9A, 0x9A, 0x9A)


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="PNG plots need matplotlib: pip install 'muva[plots]'")


def _row(variant, target, mean, metric="mAP", seed=0.01, boot=0.02, n=3, paper=None):
    return {"variant": variant, "target": target, "metric": metric, "mean": mean,
            "seed_low": mean - seed, "seed_high": mean + seed, "boot_low": mean - boot, "boot_high": mean + boot,
            "n_seeds": n, "paper": paper}


def _single(variant, target, mean, metric="mAP"):
    return {"variant": variant, "target": target, "metric": metric, "mean": mean, "seed_low": NAN,
            "seed_high": NAN, "boot_low": NAN, "boot_high": NAN, "n_seeds": 1, "paper": None}


def _png(path):
    """The picture as an RGB array, after checking that the file is a whole PNG."""
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _count(pixels, rgb):
    return int(np.all(pixels == np.array(rgb, dtype=np.uint8), axis=-1).sum())


# --------------------------------------------------------------------------- interval bars
def test_interval_bars_writes_a_png_with_a_bar_per_variant(mpl, tmp_path):
    rows = [_row("baseline", "Market1501", 0.40, paper=0.45), _row("muva", "Market1501", 0.52),
            _row("baseline", "DukeMTMC-reID", 0.30), _single("muva", "DukeMTMC-reID", 0.36),
            _row("baseline", "Market1501", 0.60, metric="rank1")]  # another metric: not drawn
    out = tmp_path / "deep" / "er" / "map.png"  # the folder does not exist yet
    got = interval_bars(rows, "mAP", out)
    assert got == out
    pixels = _png(out)
    h, w, _ = pixels.shape
    assert 600 <= w <= 2000 and 400 <= h <= 900, (w, h)
    assert _count(pixels, TAB_BLUE) > 2000 and _count(pixels, TAB_ORANGE) > 2000  # both variants drawn as bars
    assert pixels.min() < 50 and (pixels == 255).all(axis=-1).mean() > 0.5  # dark ink on a white page


def test_interval_bars_taller_bar_for_a_larger_mean(mpl, tmp_path):
    """The bar height follows the mean: doubling the value doubles the coloured area (the y axis stays 0..max)."""
    pix = {}
    for mean in (0.2, 0.4):
        rows = [_row("only", "Market1501", mean), _row("only", "MSMT17", 0.8)]
        pix[mean] = _count(_png(interval_bars(rows, "mAP", tmp_path / f"{mean}.png")), TAB_BLUE)
    assert 1.15 < pix[0.4] / pix[0.2] < 1.6  # (0.4 + 0.8) / (0.2 + 0.8) = 1.2, less the whiskers drawn on top


def test_interval_bars_single_variant_single_run(mpl, tmp_path):
    out = interval_bars([_single("only", "Market1501", 0.42)], "mAP", tmp_path / "one.png", title="one run")
    pixels = _png(out)
    assert _count(pixels, TAB_BLUE) > 5000
    assert _count(pixels, TAB_ORANGE) == 0


def test_interval_bars_grows_with_targets_and_stays_bounded(mpl, tmp_path):
    small = _png(interval_bars([_row("a", "t0", 0.5, metric="mINP")], "mINP", tmp_path / "small.png"))
    rows = [_row(f"variant-{v}", f"target number {t}", 0.2 + 0.05 * v, metric="mINP")
            for v in range(10) for t in range(6)]
    large = _png(interval_bars(rows, "mINP", tmp_path / "large.png"))
    assert large.shape[1] > small.shape[1] * 1.5
    assert large.shape[1] <= 16 * 120 + 600  # at most 16 inches of axes plus the legend


def test_interval_bars_without_rows_for_the_metric_is_a_clear_error(mpl, tmp_path):
    with pytest.raises(SweepPlotError, match=r"no interval rows for metric 'mINP' \(the rows have: mAP\)"):
        interval_bars([_row("a", "t", 0.5)], "mINP", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- difference bars
def _diff(variant, target, diff, low, high, metric="mAP"):
    return {"variant": variant, "target": target, "metric": metric, "diff": diff, "low": low, "high": high}


def test_difference_bars_highlights_intervals_that_exclude_zero(mpl, tmp_path):
    rows = [_diff("muva", "Market1501", 0.03, 0.01, 0.05),  # above 0: green
            _diff("muva-no-text", "Market1501", -0.02, -0.03, -0.01),  # below 0: red
            _diff("muva-lr", "Market1501", 0.01, -0.01, 0.03),  # includes 0: grey
            _diff("muva", "MSMT17", 0.02, NAN, NAN)]  # no interval: grey
    out = difference_bars(rows, "mAP", "baseline", tmp_path / "sub" / "diff.png")
    pixels = _png(out)
    h, w, _ = pixels.shape
    assert 500 <= w <= 1600 and 300 <= h <= 1200, (w, h)
    assert _count(pixels, GREEN) > 300 and _count(pixels, RED) > 300 and _count(pixels, GREY) > 300


def test_difference_bars_all_intervals_include_zero_are_grey(mpl, tmp_path):
    pixels = _png(difference_bars([_diff("muva", "Market1501", 0.004, -0.01, 0.02)], "mAP", "baseline",
                                  tmp_path / "grey.png"))
    assert _count(pixels, GREY) > 300
    assert _count(pixels, GREEN) == 0 and _count(pixels, RED) == 0


def test_difference_bars_without_rows_for_the_metric_is_a_clear_error(mpl, tmp_path):
    with pytest.raises(SweepPlotError, match="no difference rows for metric 'rank1'"):
        difference_bars([_diff("muva", "t", 0.01, 0.0, 0.02)], "rank1", "baseline", tmp_path / "x.png")


# --------------------------------------------------------------------------- CMC curves
def _cmc(r1, n=30):
    out, v = [], r1
    for _ in range(n):
        out.append(v)
        v += (1 - v) * 0.2
    return out


def test_cmc_curves_plain_and_banded(mpl, tmp_path):
    plain = _png(cmc_curves({"baseline": _cmc(0.5), "muva": np.array(_cmc(0.6))}, "Market1501",
                            tmp_path / "c" / "plain.png"))
    mean = _cmc(0.6)
    banded = _png(cmc_curves({"muva": {"mean": mean, "low": [m - 0.05 for m in mean],
                                       "high": [min(1.0, m + 0.05) for m in mean]}},
                             "Market1501", tmp_path / "c" / "band.png", title="with a band"))
    for pixels in (plain, banded):
        h, w, _ = pixels.shape
        assert 600 <= w <= 1600 and 400 <= h <= 800, (w, h)
    assert _count(plain, TAB_BLUE) > 200 and _count(plain, TAB_ORANGE) > 200
    # the shaded band: light blue pixels (the variant's colour at low alpha on white) only in the banded picture
    def light(pixels):
        return int((np.abs(pixels.astype(int) - np.array([0xD6, 0xE6, 0xF2])).sum(-1) < 30).sum())

    assert light(banded) > 5 * max(light(plain), 100)


def test_cmc_curves_single_short_curve(mpl, tmp_path):
    out = cmc_curves({"only": [0.8, 0.9, 0.95]}, "GRID", tmp_path / "short.png", max_rank=20)
    assert _count(_png(out), TAB_BLUE) > 50


def test_cmc_curves_bad_input_is_a_clear_error(mpl, tmp_path):
    with pytest.raises(SweepPlotError, match="'low' has 2 ranks but 'mean' has 3"):
        cmc_curves({"v": {"mean": [0.5, 0.6, 0.7], "low": [0.4, 0.5], "high": [0.6, 0.7, 0.8]}}, "t",
                   tmp_path / "a.png")
    with pytest.raises(SweepPlotError, match="a mapping needs a 'mean' list"):
        cmc_curves({"v": {"avg": [0.5]}}, "t", tmp_path / "b.png")
    with pytest.raises(SweepPlotError, match="no CMC curves to draw for target 't'"):
        cmc_curves({}, "t", tmp_path / "c.png")


# --------------------------------------------------------------------------- without matplotlib
MESSAGE = "PNG plots need matplotlib: pip install 'muva[plots]'"


def test_without_matplotlib_every_figure_raises_plots_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails, even when loaded before
    calls = [lambda: interval_bars([_row("a", "t", 0.5)], "mAP", tmp_path / "i.png"),
             lambda: difference_bars([_diff("a", "t", 0.0, -0.1, 0.1)], "mAP", "ref", tmp_path / "d.png"),
             lambda: cmc_curves({"a": [0.5, 0.6]}, "t", tmp_path / "c.png")]
    for call in calls:
        with pytest.raises(PlotsUnavailable) as info:
            call()
        assert str(info.value) == MESSAGE
        assert isinstance(info.value, MuvaError) and info.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_importing_the_module_does_not_load_matplotlib():
    code = "import sys, muva.viz.sweep_plots; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert sweep_plots.PlotsUnavailable is PlotsUnavailable
