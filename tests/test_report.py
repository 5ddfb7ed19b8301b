"""``shoal.report``: the HTML page, parsed, and rendered in headless Chromium."""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
from collections import Counter

import pytest
import shoal
from shoal.trace.report import render
from shoal.trace.timeline import PALETTE, PLOT_WIDTH
from trace_factory import Call, make_trace

pytestmark = pytest.mark.timeout(120)


class Page(html.parser.HTMLParser):
    """Every tag with its attributes, and the text, of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]


def trace_of(calls, **kwargs) -> shoal.Trace:
    return shoal.Trace.from_dict(make_trace(calls, **kwargs))


def three_workers() -> shoal.Trace:
    return trace_of(
        [
            Call([0.2] * 9, function="mymod.<lambda>"),
            Call([0.1, 0.4, 0.1, 0.1, 0.1], function="mymod.filter", outcomes={1: "error"}),
        ],
        workers=3,
    )


def test_the_page_is_self_contained():
    page_text = render(three_workers())
    page = Page(page_text)
    tags = {tag for tag, _ in page.tags}
    assert {"html", "style", "svg", "rect", "title", "table"} <= tags
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for _, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), name
            assert "//" not in (value or ""), (name, value)
    assert "http" not in page_text and "@import" not in page_text


def test_timeline_has_a_lane_per_worker_and_a_rect_per_task():
    trace = three_workers()
    page = Page(render(trace))
    assert len(page.find("rect", class_="lane")) == 3
    tasks = page.find("rect", class_="task")
    assert len(tasks) == len(trace.tasks) == 14
    assert Counter(r["data-call"] for r in tasks) == {"0": 9, "1": 5}
    assert {r["fill"] for r in tasks if r["data-call"] == "0"} == {PALETTE[0]}
    assert {r["fill"] for r in tasks if r["data-call"] == "1"} == {PALETTE[1]}
    assert len(page.find("rect", class_="failed")) == 1
    labels = " ".join(page.text)
    assert "worker 0" in labels and "worker 2" in labels and "pid 1002" in labels


def test_rects_are_placed_on_the_time_axis():
    trace = trace_of([Call([0.5, 0.5])], workers=1, start_up=0.0)  # wall 1 s
    page = Page(render(trace))
    rects = page.find("rect", class_="task")
    xs = sorted(float(r["x"]) for r in rects)
    widths = {float(r["width"]) for r in rects}
    assert widths == {PLOT_WIDTH / 2}
    assert xs[1] - xs[0] == pytest.approx(PLOT_WIDTH / 2)
    axis = " ".join(page.text)
    assert "seconds since the pool started" in axis and "0.5" in axis


def test_every_string_from_the_trace_is_escaped():
    data = make_trace([Call([0.1] * 2, function="<script>alert(1)</script>", method="map")])
    data["host"] = "<b>host</b>"
    text = render(shoal.Trace.from_dict(data))
    assert "<script>" not in text and "<b>host" not in text
    assert "map(&lt;script&gt;alert(1)&lt;/script&gt;)" in text
    page = Page(text)
    assert not page.find("script")
    shown = " ".join(page.text)  # as a browser shows it: the markup is text
    assert "<b>host</b>" in shown and "map(<script>alert(1)</script>)" in shown


def test_tooltips_describe_the_task():
    page_text = render(three_workers())
    assert "task 10: map(mymod.filter), 1 item(s)" in page_text
    assert "outcome: error" in page_text
    assert "function ran 400 ms" in page_text


def test_advice_numbers_and_calls_appear():
    text = " ".join(Page(render(three_workers())).text)
    assert "Advice" in text and "1 of 14 tasks did not complete: 1 raised an exception." in text
    assert "speed-up" in text and "utilisation" in text and "Where the time went" in text
    assert "map(mymod.filter)" in text and "idle after the last task" in text


def test_thousands_of_tiny_tasks_are_drawn_in_few_rects():
    trace = trace_of([Call([2e-5] * 20_000), Call([1e-4] * 5000, function="m.g")], workers=4)
    text = render(trace)
    page = Page(text)
    rects = page.find("rect", class_="task")
    assert len(rects) <= 4 * 2 * PLOT_WIDTH
    assert {r["data-call"] for r in rects} == {"0", "1"}
    assert len(text) < 1_000_000
    assert "tasks of map(mymod.work)" in text  # merged blocks say how many


def test_a_stream_of_submits_is_one_colour_and_a_short_table():
    calls = [Call([0.002], method="submit", function="m.f") for _ in range(5000)]
    calls.append(Call([0.1] * 4, function="m.g"))
    page = Page(render(trace_of(calls, workers=2)))
    fills = Counter(r["fill"] for r in page.find("rect", class_="task"))
    assert set(fills) == {PALETTE[0], PALETTE[1]}
    # Rows with their headers: 2 workers, 7 + 1 kinds of time, 30 of the 5,001 calls.
    assert len(page.find("tr")) == (1 + 2) + (1 + 8) + (1 + 30)
    text = " ".join(page.text)
    assert "4,971 shorter calls are not listed." in text
    assert len(page.find("i", class_="swatch")) == 2 + 7 + 30  # legend, breakdown, calls


def test_calls_of_one_function_share_a_colour():
    trace = trace_of([Call([0.1] * 2), Call([0.1] * 2, function="m.g"), Call([0.1] * 2)])
    tasks = Page(render(trace)).find("rect", class_="task")
    colour = {r["data-call"]: r["fill"] for r in tasks}
    assert colour == {"0": PALETTE[0], "1": PALETTE[1], "2": PALETTE[0]}


def test_cpu_above_busy_time_is_explained():
    busy_page = " ".join(Page(render(trace_of([Call([0.1] * 4)], workers=2))).text)
    assert "more CPU than busy time" not in busy_page
    more = " ".join(Page(render(trace_of([Call([0.1] * 4)], workers=2, cpu_share=1.3))).text)
    assert "Every worker used more CPU than busy time" in more
    assert "Starting the interpreter and importing modules" in more


def test_rounding_residue_shows_as_zero():
    from shoal.trace.format import percent, seconds

    assert seconds(4.52e-16) == "0 s"
    assert percent(1.2e-15) == "0%"
    assert seconds(1.43e-6) == "1.43 µs"
    assert percent(0.0004) == "0.04%"


def test_odd_traces_still_render():
    empty = Page(render(trace_of([], workers=2)))
    assert len(empty.find("rect", class_="lane")) == 2 and not empty.find("rect", class_="task")
    single = Page(render(trace_of([Call([0.1] * 3)], workers=1, kind="thread")))
    assert len(single.find("rect", class_="task")) == 3
    data = make_trace([Call([0.1] * 4, outcomes={1: "lost", 3: "cancelled"})], workers=2)
    data["tasks"][1]["end"] = None
    data["calls"][0]["end"] = None
    unfinished = Page(render(shoal.Trace.from_dict(data)))
    assert len(unfinished.find("rect", class_="task")) == 3
    assert len(unfinished.find("rect", class_="failed")) == 1


def test_a_real_pool_with_one_long_task_gets_imbalance_advice():
    import helpers_mod as h

    with shoal.Pool(2, trace=True) as pool:
        pool.starmap(h.sleep_and_return, [(0, 0.4), (1, 0.02), (2, 0.02), (3, 0.02)], chunksize=1)
    trace = pool.trace()
    page = Page(render(trace))
    assert len(page.find("rect", class_="lane")) == 2
    assert len(page.find("rect", class_="task")) == 4
    text = " ".join(page.text)
    assert "starmap(helpers_mod.sleep_and_return): workers sat idle for " in text
    assert re.search(r"the longest ran (4\d\d ms|\d\.\d+ s)", text)  # slept 0.4 s
    assert "dynamic schedule" in text


def test_report_writes_a_file_from_a_trace_or_its_path(tmp_path):
    trace = three_workers()
    trace.save(tmp_path / "t.json")
    assert shoal.report(trace, tmp_path / "a.html") == str(tmp_path / "a.html")
    shoal.report(tmp_path / "t.json", tmp_path / "b.html")
    assert (tmp_path / "a.html").read_text() == (tmp_path / "b.html").read_text()


# ------------------------------------------------------------------ in a browser


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs Debian's chromium package")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return found


def screenshot(html_path, png_path, profile_dir, size=(1100, 1600)) -> None:
    command = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={png_path}",
        html_path.as_uri(),
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and png_path.exists(), done.stderr[-2000:]


def bands(rows: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive row numbers, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for y in rows:
        if runs and y == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], y)
        else:
            runs.append((y, y))
    return runs


def test_chromium_shows_the_timeline(tmp_path):
    from PIL import Image

    html_path, png_path = tmp_path / "run.html", tmp_path / "run.png"
    shoal.report(three_workers(), html_path)
    screenshot(html_path, png_path, tmp_path / "profile")
    image = Image.open(png_path).convert("RGB")
    width, height = image.size
    pixels = image.load()
    for colour, lanes in ((PALETTE[0], 3), (PALETTE[1], 3)):
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        # Rows where the call's colour spans a long stretch: timeline lanes,
        # not the legend's small swatch.
        rows = [y for y in range(height) if sum(pixels[x, y] == rgb for x in range(width)) > 40]
        lane_bands = bands(rows)
        assert len(lane_bands) == lanes, (colour, lane_bands)
        assert all(last - first >= 15 for first, last in lane_bands)  # a lane is 20 px tall
