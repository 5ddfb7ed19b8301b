"""``shoal bench``'s parts: arguments, the Amdahl fit, the plot, a measurement."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest
from shoal.cli.bench import (
    Point,
    amdahl_fit,
    amdahl_speedup,
    default_workers,
    load_function,
    measure,
    parse_target,
    parse_workers,
    plot_svg,
)

pytestmark = pytest.mark.timeout(60)

SVG = "{http://www.w3.org/2000/svg}"


def points_for(serial_fraction: float, counts=(1, 2, 4, 8)) -> list[Point]:
    return [
        Point(p, 1 / s, 1.0, s, s / p) for p in counts for s in [amdahl_speedup(serial_fraction, p)]
    ]


def test_target_is_module_colon_function():
    assert parse_target("pkg.mod:func") == ("pkg.mod", "func")
    assert parse_target("mod:Class.method") == ("mod", "Class.method")
    for bad in ("mod", "mod:", ":func", ""):
        with pytest.raises(ValueError, match="expected MODULE:FUNCTION"):
            parse_target(bad)


def test_worker_counts():
    assert parse_workers("1,2,4") == [1, 2, 4]
    assert parse_workers(" 4, 1 ,1") == [1, 4]
    for bad in ("0", "a", "", "1,,2", "-1", "2.5"):
        with pytest.raises(ValueError, match="positive integers separated by commas"):
            parse_workers(bad)


@pytest.mark.parametrize(
    ("cpus", "expected"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])]
)
def test_default_worker_counts_are_powers_of_two_and_the_cores(cpus, expected):
    assert default_workers(cpus) == expected


@pytest.mark.parametrize("f", [0.0, 0.05, 0.3, 1.0])
def test_amdahl_fit_recovers_the_serial_fraction(f):
    assert amdahl_fit(points_for(f)) == pytest.approx(f)


def test_amdahl_fit_is_least_squares_over_noisy_points():
    noisy = [Point(1, 1, 1, 1.0, 1), Point(2, 1, 1, 1.9, 1), Point(4, 1, 1, 3.2, 1)]
    f = amdahl_fit(noisy)
    assert 0.05 < f < 0.15
    residual = sum((1 / p.speedup - amdahl_speedup(f, p.workers) ** -1) ** 2 for p in noisy)
    for other in (f - 0.01, f + 0.01):
        assert residual < sum(
            (1 / p.speedup - amdahl_speedup(other, p.workers) ** -1) ** 2 for p in noisy
        )


def test_amdahl_fit_needs_more_than_one_worker_and_clamps():
    assert amdahl_fit([Point(1, 1, 1, 1.0, 1)]) is None
    slower = [Point(1, 2, 1, 0.5, 0.5), Point(2, 3, 1, 0.33, 0.17)]
    assert amdahl_fit(slower) == 1.0  # slower with more workers: nothing parallel
    superlinear = [Point(2, 1, 1, 2.5, 1.25), Point(4, 1, 1, 5.0, 1.25)]
    assert amdahl_fit(superlinear) == 0.0


def test_plot_is_svg_with_the_points_the_fit_and_an_escaped_title():
    points = points_for(0.1)
    root = ET.fromstring(plot_svg(points, 0.1, "speed-up of m:<f>"))
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f"{SVG}circle")) == len(points)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "speed-up of m:<f>" in texts and "Amdahl, f = 0.100" in texts
    assert {"1", "2", "4", "8", "workers"} <= set(texts)
    assert len(root.findall(f"{SVG}polyline")) == 3  # ideal, Amdahl, measured


def test_plot_without_a_fit_has_no_curve():
    root = ET.fromstring(plot_svg([Point(1, 1, 1, 1.0, 1)], None, "t"))
    assert len(root.findall(f"{SVG}polyline")) == 2


def test_measure_times_the_pool_against_a_serial_loop():
    point = measure(abs, list(range(-500, 500)), 2, rounds=2)
    assert point.workers == 2
    assert point.seconds > 0 and point.serial > 0
    assert point.speedup == pytest.approx(point.serial / point.seconds)
    assert point.efficiency == pytest.approx(point.speedup / 2)


def test_load_function_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here_mod.py").write_text(
        "class Box:\n    @staticmethod\n    def twice(x):\n        return 2 * x\nVALUE = 3\n"
    )
    assert load_function("here_mod", "Box.twice")(4) == 8
    with pytest.raises(TypeError, match="here_mod:VALUE is not a function"):
        load_function("here_mod", "VALUE")
    with pytest.raises(AttributeError):
        load_function("here_mod", "missing")
    with pytest.raises(ImportError):
        load_function("no_such_module_here", "f")
