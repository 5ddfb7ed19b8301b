"""The report's timeline: one lane per worker, a rectangle per task, coloured
by its call's function, with a tooltip (``<title>``) for each."""

from __future__ import annotations

from dataclasses import dataclass, field

from .format import plural, seconds, size
from .summary import Interval, TraceSummary, lanes
from .svg import esc, nice_ticks, num, tick_label
from .trace import CallRecord, Trace

#: Colour-blind-safe colours (Okabe and Ito), one per call, cycling.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#7F7F7F")

LABEL_WIDTH = 140
PLOT_WIDTH = 800
RIGHT_MARGIN = 24
LANE_HEIGHT = 20
LANE_GAP = 6
TOP = 8
AXIS_HEIGHT = 40
#: Tasks closer together than this (in pixels) and this narrow merge into one block.
MERGE_PX = 1.0


def call_colours(trace: Trace) -> dict[int, str]:
    """A colour per call; calls of one method and function share it, so a
    stream of ``submit(f)`` calls reads as one."""
    by_label: dict[str, str] = {}
    for call in trace.calls:
        by_label.setdefault(call.label, PALETTE[len(by_label) % len(PALETTE)])
    return {call.id: by_label[call.label] for call in trace.calls}


@dataclass
class Block:
    """Neighbouring tasks drawn as one rectangle (a single task, usually)."""

    x0: float
    x1: float
    intervals: list[Interval] = field(default_factory=list)
    calls: set[int] = field(default_factory=set)

    def add(self, interval: Interval, x1: float) -> None:
        self.x1 = max(self.x1, x1)
        self.intervals.append(interval)
        self.calls.add(interval.task.call)

    @property
    def failed(self) -> int:
        return sum(iv.task.outcome not in ("ok", "pending") for iv in self.intervals)


def blocks(intervals: list[Interval], scale: float) -> list[Block]:
    """Merges sub-pixel tasks, so thousands of tiny tasks draw as a few
    rectangles: a tiny task joins the block before it if they touch (closer
    than a pixel) and belong to one call, or if both are still under a pixel.
    A lane then holds at most about one block per pixel."""
    result: list[Block] = []
    for iv in intervals:
        x0, x1 = iv.start * scale, iv.end * scale
        if not (result and _joins(result[-1], iv.task.call, x0, x1)):
            result.append(Block(x0, x1))
        result[-1].add(iv, x1)
    return result


def _joins(block: Block, call: int, x0: float, x1: float) -> bool:
    tiny, block_tiny = x1 - x0 < MERGE_PX, block.x1 - block.x0 < MERGE_PX
    touching = x0 - block.x1 < MERGE_PX
    same_call = block.calls == {call}
    return touching and (tiny or block_tiny) and (same_call or (tiny and block_tiny))


def timeline_svg(trace: Trace, summary: TraceSummary, colours: dict[int, str]) -> str:
    wall = summary.wall
    scale = PLOT_WIDTH / wall if wall > 0 else 0.0
    calls = {call.id: call for call in trace.calls}
    by_slot = lanes(trace, wall)
    height = TOP + len(by_slot) * (LANE_HEIGHT + LANE_GAP) + AXIS_HEIGHT
    width = LABEL_WIDTH + PLOT_WIDTH + RIGHT_MARGIN
    parts = [
        f'<svg class="timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Timeline: tasks on each of {len(by_slot)} workers">',
        '<defs><pattern id="failed" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="#000" '
        'fill-opacity="0.55"/></pattern></defs>',
        _axis(wall, scale, height - AXIS_HEIGHT),
    ]
    for row, use in enumerate(summary.lanes):
        y = TOP + row * (LANE_HEIGHT + LANE_GAP)
        parts.append(_lane_label(use.worker, use.pids, y))
        parts.append(
            f'<rect class="lane" x="{LABEL_WIDTH}" y="{y}" width="{PLOT_WIDTH}" '
            f'height="{LANE_HEIGHT}" fill="#f1f1f1"/>'
        )
        for block in blocks(by_slot[use.worker], scale):
            parts.append(_block_rect(block, y, calls, colours))
    parts.append("</svg>")
    return "\n".join(parts)


def _lane_label(worker: int, pids: tuple[int, ...], y: float) -> str:
    if len(pids) == 1:
        detail = f"pid {pids[0]}"
    elif pids:
        detail = plural(len(pids), "process", "processes")
    else:
        detail = "no process"
    title = esc("pids " + ", ".join(map(str, pids))) if pids else ""
    middle = y + LANE_HEIGHT / 2
    return (
        f'<text x="{LABEL_WIDTH - 8}" y="{num(middle)}" text-anchor="end" '
        f'dominant-baseline="middle" class="lane-label">worker {worker} '
        f'<tspan class="pid">{esc(detail)}</tspan><title>{title}</title></text>'
    )


def _block_rect(
    block: Block, y: float, calls: dict[int, CallRecord], colours: dict[int, str]
) -> str:
    # The call that had most of the block's time gives its colour.
    share: dict[int, float] = {}
    for iv in block.intervals:
        share[iv.task.call] = share.get(iv.task.call, 0.0) + iv.end - iv.start
    call = max(share, key=share.__getitem__)
    x = LABEL_WIDTH + block.x0
    width = max(block.x1 - block.x0, MERGE_PX)
    geometry = f'x="{num(x)}" y="{y}" width="{num(width)}" height="{LANE_HEIGHT}"'
    rect = (
        f'<rect class="task" data-call="{call}" {geometry} fill="{colours[call]}">'
        f"<title>{esc(_tooltip(block, calls))}</title></rect>"
    )
    if block.failed:
        rect += f'<rect class="failed" {geometry} fill="url(#failed)"/>'
    return rect


def _tooltip(block: Block, calls: dict[int, CallRecord]) -> str:
    first, last = block.intervals[0], block.intervals[-1]
    if len(block.intervals) == 1:
        task = first.task
        call = calls[task.call]
        lines = [
            f"task {task.id}: {call.label}, {task.items} item(s)",
            f"{first.start:.4f} s to {first.end:.4f} s ({seconds(first.end - first.start)})",
        ]
        if task.run is not None:
            lines.append(f"function ran {seconds(task.run)}")
        lines.append(
            f"arguments {size(task.bytes_in)}"
            + (f", result {size(task.bytes_out)}" if task.bytes_out is not None else "")
        )
        if task.outcome != "ok":
            lines.append(f"outcome: {task.outcome}")
        return "\n".join(lines)
    labels = list(dict.fromkeys(calls[c].label for c in sorted(block.calls)))
    names = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
    run = sum(iv.task.run or 0.0 for iv in block.intervals)
    lines = [
        f"{plural(len(block.intervals), 'task')} of {names}",
        f"{first.start:.4f} s to {last.end:.4f} s, function ran {seconds(run)} in all",
    ]
    if block.failed:
        lines.append(f"{block.failed} did not complete")
    return "\n".join(lines)


def _axis(wall: float, scale: float, y: float) -> str:
    parts = [f'<g class="axis" transform="translate({LABEL_WIDTH},0)">']
    for tick in nice_ticks(0.0, wall) if wall > 0 else [0.0]:
        x = num(tick * scale)
        parts.append(f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{num(y + 4)}" class="grid"/>')
        parts.append(
            f'<text x="{x}" y="{num(y + 16)}" text-anchor="middle">{tick_label(tick)}</text>'
        )
    parts.append(
        f'<text x="{PLOT_WIDTH / 2}" y="{num(y + 34)}" text-anchor="middle" class="axis-title">'
        "seconds since the pool started</text></g>"
    )
    return "".join(parts)
