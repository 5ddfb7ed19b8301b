"""``shoal.report``: a trace as one self-contained HTML page.

Inline CSS and SVG only: no script, no fonts or images fetched, no server;
the file can be mailed or opened offline. Every string that came from the
trace is escaped.
"""

from __future__ import annotations

import os

from .advice import Advice, advise
from .format import percent, plural, seconds, size
from .summary import TraceSummary
from .svg import esc, num
from .timeline import call_colours, timeline_svg
from .trace import Trace

#: What worker time went to, in the order drawn, with a label and colour each.
BREAKDOWN = (
    ("run", "your function", "#3a7d44"),
    ("deser", "unpickling arguments (worker)", "#c9604a"),
    ("result_ser", "pickling results (worker)", "#e8a27c"),
    ("other", "hand-over: transport and bookkeeping", "#8e7dbe"),
    ("before_first", "idle before the first task", "#d4d4d4"),
    ("between", "idle between tasks", "#b0b0b0"),
    ("after_last", "idle after the last task", "#8a8a8a"),
)
#: Most calls listed in the legend and the calls table (a submit() loop makes thousands).
MAX_LISTED = 30
BAR_WIDTH = 960
BAR_HEIGHT = 26

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 130px; }
.card b { display: block; font-size: 22px; } .card span { color: #555; font-size: 13px; }
ul.advice { padding-left: 20px; } ul.advice li { margin: 6px 0; }
li.failures { color: #a00; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          vertical-align: -1px; border-radius: 2px; }
.bar { width: 160px; height: 10px; background: #eee; display: inline-block; }
.bar i { display: block; height: 10px; background: #3a7d44; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
svg .pid { fill: #888; } svg .grid { stroke: #ddd; }
.legend { margin: 6px 0; font-size: 14px; } .legend span { margin-right: 14px; }
.note { color: #555; font-size: 13px; }
"""


def report(trace: Trace | str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Writes the HTML report of ``trace`` (a :class:`shoal.Trace` or the path
    of a saved one) to ``path``; returns the path."""
    if not isinstance(trace, Trace):
        trace = Trace.load(trace)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(trace))
    return os.fspath(path)


def render(trace: Trace) -> str:
    summary = trace.summary()
    colours = call_colours(trace)
    body = [
        _heading(trace),
        _key_numbers(summary),
        _advice_list(advise(summary)),
        _timeline(trace, summary, colours),
        _utilisation(summary),
        _breakdown(summary),
        _calls(summary, colours),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>shoal report: {esc(trace.host)}, {esc(trace.created)}</title>\n"
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _heading(trace: Trace) -> str:
    return (
        "<h1>shoal report</h1>\n"
        f'<p class="meta">{esc(plural(trace.pool.workers, trace.pool.kind + " worker"))} on '
        f"{esc(trace.host)} ({trace.cpus} usable cores), recorded {esc(trace.created)} "
        f"with shoal {esc(trace.shoal)} on Python {esc(trace.python)}</p>"
    )


def _key_numbers(s: TraceSummary) -> str:
    failed = s.tasks - s.outcomes.get("ok", 0)
    cards = [
        (seconds(s.wall), "wall time"),
        (f"{s.speedup:.2f}x", f"speed-up: {seconds(s.run_total)} of tasks in {seconds(s.wall)}"),
        (percent(s.efficiency), f"efficiency: speed-up / {plural(s.workers, 'worker')}"),
        (percent(s.utilisation), "utilisation: workers busy"),
        (f"{s.tasks:,}", f"tasks, {failed:,} not completed" if failed else "tasks, all ok"),
    ]
    if s.cpu_total is not None:
        busy = sum(use.busy for use in s.lanes)
        cards.append((seconds(s.cpu_total), f"CPU time of the workers, busy {seconds(busy)}"))
    items = "".join(
        f'<div class="card"><b>{value}</b><span>{esc(label)}</span></div>' for value, label in cards
    )
    return f'<div class="cards">{items}</div>'


def _advice_list(advice: list[Advice]) -> str:
    items = "\n".join(f'<li class="{a.topic}">{esc(a.text)}</li>' for a in advice)
    return f'<h2>Advice</h2>\n<ul class="advice">\n{items}\n</ul>'


def _timeline(trace: Trace, s: TraceSummary, colours: dict[int, str]) -> str:
    labels: dict[str, str] = {}
    for call in trace.calls:
        labels.setdefault(call.label, colours[call.id])
    legend = "".join(
        f'<span><i class="swatch" style="background:{colour}"></i>{esc(label)}</span>'
        for label, colour in list(labels.items())[:MAX_LISTED]
    )
    if len(labels) > MAX_LISTED:
        legend += f"<span>and {len(labels) - MAX_LISTED} more</span>"
    if any(o not in ("ok", "pending") for o in s.outcomes):
        legend += '<span><i class="swatch" style="background:#555"></i>hatched: failed</span>'
    return (
        "<h2>Timeline</h2>\n"
        f'<div class="legend">{legend}</div>\n'
        f"{timeline_svg(trace, s, colours)}\n"
        '<p class="note">One lane per worker; a rectangle per task, from when it started '
        "to when it ended in its worker, coloured by the function it ran. Hover for "
        "details. Tasks too short to see are drawn together.</p>"
    )


def _utilisation(s: TraceSummary) -> str:
    rows = []
    for use in s.lanes:
        cpu = "–" if use.cpu is None else seconds(use.cpu)
        pids = ", ".join(map(str, use.pids)) or "–"
        rows.append(
            f"<tr><td>worker {use.worker}</td><td>{esc(pids)}</td><td>{use.tasks:,}</td>"
            f"<td>{seconds(use.busy)}</td><td>{cpu}</td>"
            f'<td><span class="bar"><i style="width:{num(100 * min(use.utilisation, 1))}%">'
            f"</i></span> {percent(use.utilisation)}</td></tr>"
        )
    return (
        "<h2>Utilisation</h2>\n<table><tr><th>worker</th><th>pid</th><th>tasks</th>"
        "<th>busy</th><th>CPU</th><th>busy share of the run</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n"
        '<p class="note">Busy: running a task. CPU: user and system time of the '
        "worker's processes; far less CPU than busy time means the tasks wait."
        f"{_cpu_above_busy(s)}</p>"
    )


def _cpu_above_busy(s: TraceSummary) -> str:
    """Why a worker's CPU time can exceed its busy time, when it does."""
    over = [use for use in s.lanes if use.cpu is not None and use.cpu > use.busy]
    if not over:
        return ""
    which = "Every worker" if len(over) == len(s.lanes) else f"{len(over)} of the workers"
    return esc(
        f" {which} used more CPU than busy time: CPU time counts a worker's whole life, "
        "busy time only its tasks. Starting the interpreter and importing modules (tens "
        "of milliseconds of CPU each), the hand-over between tasks, and any threads a "
        "task starts (numpy's BLAS runs on several cores) all add CPU time outside the "
        "busy time."
    )


def _breakdown(s: TraceSummary) -> str:
    amounts = [(label, colour, getattr(s.time, key)) for key, label, colour in BREAKDOWN]
    total = sum(amount for _, _, amount in amounts)
    bar, rows, x = [], [], 0.0
    for label, colour, amount in amounts:
        share = amount / total if total > 0 else 0.0
        width = share * BAR_WIDTH
        if width > 0:
            bar.append(
                f'<rect x="{num(x)}" y="0" width="{num(width)}" height="{BAR_HEIGHT}" '
                f'fill="{colour}"><title>{esc(label)}: {seconds(amount)}</title></rect>'
            )
        x += width
        rows.append(
            f'<tr><td><i class="swatch" style="background:{colour}"></i>{esc(label)}</td>'
            f"<td>{seconds(amount)}</td><td>{percent(share)}</td></tr>"
        )
    rows.append(
        f"<tr><td>pickling arguments (parent, not worker time)</td>"
        f"<td>{seconds(s.time.parent_ser)}</td><td></td></tr>"
    )
    return (
        "<h2>Where the time went</h2>\n"
        f'<svg class="breakdown" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" '
        f'role="img" aria-label="Worker time by activity">{"".join(bar)}</svg>\n'
        f"<table><tr><th>worker time ({plural(s.workers, 'worker')} x {seconds(s.wall)})</th>"
        "<th>seconds</th><th>share</th></tr>\n" + "\n".join(rows) + "\n</table>\n"
        f'<p class="note">Arguments sent: {size(s.bytes_in)}; results returned: '
        f"{size(s.bytes_out)}.</p>"
    )


def _calls(s: TraceSummary, colours: dict[int, str]) -> str:
    listed = s.calls
    if len(listed) > MAX_LISTED:  # the longest ones, in order
        longest = sorted(listed, key=lambda c: c.window, reverse=True)[:MAX_LISTED]
        listed = tuple(sorted(longest, key=lambda c: c.call.id))
    rows = []
    for c in listed:
        duration = "–" if c.call.end is None else seconds(c.call.end - c.call.start)
        median = "–" if c.median_run is None else seconds(c.median_run)
        longest_task = "–" if c.max_run is None else seconds(c.max_run)
        chunksize = "–" if c.call.chunksize is None else f"{c.call.chunksize:,}"
        rows.append(
            f'<tr><td><i class="swatch" style="background:{colours[c.call.id]}"></i>'
            f"{esc(c.call.label)}</td><td>{c.call.tasks:,}</td><td>{c.call.items:,}</td>"
            f"<td>{chunksize}</td><td>{duration}</td><td>{median}</td><td>{longest_task}</td>"
            f"<td>{seconds(c.run_total)}</td></tr>"
        )
    hidden = len(s.calls) - len(listed)
    verb = "is" if hidden == 1 else "are"
    listed_note = f"{plural(hidden, 'shorter call')} {verb} not listed."
    more = f'<p class="note">{listed_note}</p>' if hidden else ""
    return (
        "<h2>Calls</h2>\n<table><tr><th>call</th><th>tasks</th><th>items</th>"
        "<th>chunksize</th><th>took</th><th>median task</th><th>longest task</th>"
        "<th>function ran</th></tr>\n" + "\n".join(rows) + "\n</table>" + more
    )
