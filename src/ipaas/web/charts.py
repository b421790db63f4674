"""The dashboard's chart, drawn as SVG shapes on the server (no charting script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ipaas.executions.dashboard import Summary
from ipaas.executions.models import ExecutionStatus

WIDTH = 600
HEIGHT = 160
#: Stacking order, bottom up; the colours pass WCAG AA contrast against white.
ORDER = (
    ExecutionStatus.succeeded,
    ExecutionStatus.failed,
    ExecutionStatus.timed_out,
    ExecutionStatus.cancelled,
    ExecutionStatus.running,
    ExecutionStatus.queued,
)
COLORS = {
    ExecutionStatus.succeeded: "#1a7f37",
    ExecutionStatus.failed: "#cf222e",
    ExecutionStatus.timed_out: "#9a6700",
    ExecutionStatus.cancelled: "#57606a",
    ExecutionStatus.running: "#0969da",
    ExecutionStatus.queued: "#8250df",
}


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    labels: list[tuple[float, str]]
    totals: dict[str, int]
    colors: dict[str, str]


def per_minute(summary: Summary) -> Chart:
    peak = max((sum(b.values()) for b in summary.per_minute), default=0)
    scale = (HEIGHT - 4) / peak if peak else 0
    slot = WIDTH / len(summary.per_minute)
    bars = []
    totals = {status.value: 0 for status in ORDER}
    for index, bucket in enumerate(summary.per_minute):
        minute = (summary.since + timedelta(minutes=index)).strftime("%H:%M")
        base: float = HEIGHT
        for status in ORDER:
            count = bucket.get(status, 0)
            if not count:
                continue
            totals[status.value] += count
            height = count * scale
            base -= height
            bars.append(
                Bar(
                    x=round(index * slot + 1, 2),
                    y=round(base, 2),
                    width=round(slot - 2, 2),
                    height=round(height, 2),
                    color=COLORS[status],
                    title=f"{minute} {status.value}: {count}",
                )
            )
    labels = [
        (round(i * slot, 2), (summary.since + timedelta(minutes=i)).strftime("%H:%M"))
        for i in range(0, 60, 15)
    ]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        peak=peak,
        labels=labels,
        totals=totals,
        colors={s.value: c for s, c in COLORS.items()},
    )
