"""Samples with min/median/max, and the one table `make bench` prints."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Sample:
    """Repeated measurements of one thing (interleaved with its counterpart's)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def percentile(self, q: float) -> float:
        """The value below which a fraction `q` of the values lie (nearest rank)."""
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    def text(self, unit: str = "", digits: int = 0) -> str:
        """`min / median / max unit`."""
        low, mid, high = min(self.values), self.median, max(self.values)
        return f"{low:,.{digits}f} / {mid:,.{digits}f} / {high:,.{digits}f}{unit}"


@dataclass
class Row:
    measurement: str
    floor: str  # what the ratio divides by, as min / median / max
    ours: str
    ratio: float | None
    goal: str = ""
    check: Callable[[float], bool] | None = None
    ratio_text: str | None = None  # instead of the ratio's own figure

    @property
    def verdict(self) -> str:
        if self.ratio is None or self.check is None:
            return ""
        return "met" if self.check(self.ratio) else "NOT met"


def at_least(limit: float) -> tuple[str, Callable[[float], bool]]:
    return f"≥ {limit:g}", lambda ratio: ratio >= limit


def at_most(limit: float) -> tuple[str, Callable[[float], bool]]:
    return f"≤ {limit:g}", lambda ratio: ratio <= limit


def ratio_of(ours: Sample, floor: Sample) -> float:
    """The median of the rounds' ratios (each round measured both, one after the other, so a
    change in the machine's load between rounds cancels out); of the medians when unpaired."""
    if len(ours.values) != len(floor.values):
        return ours.median / floor.median
    return statistics.median(a / b for a, b in zip(ours.values, floor.values, strict=True))


def render(rows: list[Row]) -> str:
    """A Markdown table: the reference (`floor`) and ours as min / median / max, their ratio
    (ratio_of), the goal and whether it is met."""
    lines = [
        "| measurement | floor (min / median / max) | ours (min / median / max) | ratio | goal | |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        ratio = row.ratio_text if row.ratio_text is not None else ratio
        cells = [row.measurement, row.floor, row.ours, ratio, row.goal, row.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
