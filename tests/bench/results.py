"""One benchmark result as `make bench` prints it and writes it to var/bench/results.json."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float
    target: str
    # Whether the target holds for this run; a miss is reported, never tuned away.
    met: bool
