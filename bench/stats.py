"""Figures: the median of repetitions, with their spread."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    median: float
    low: float
    high: float
    reps: tuple[float, ...]
    unit: str

    @classmethod
    def of(cls, values: list[float], unit: str) -> Figure:
        if not values:
            raise ValueError("a figure needs at least one value")
        return cls(statistics.median(values), min(values), max(values), tuple(values), unit)

    def show(self) -> str:
        """``median (min–max)``, rounded to what the noise allows."""
        return f"{_num(self.median)} ({_num(self.low)}–{_num(self.high)})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def figures(reps: list[dict[str, Any]], units: dict[str, str]) -> dict[str, Figure]:
    """One figure per key of ``units`` that every repetition reported."""
    out = {}
    for key, unit in units.items():
        values = [float(r[key]) for r in reps if r.get(key) is not None]
        if values:
            out[key] = Figure.of(values, unit)
    return out


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"
