"""Who goes when: the canary, then cumulative waves, each updated at most `max_unavailable` at a time.

Devices are ordered by id so a plan is reproducible: the same manifest and fleet always pick the
same canary, and a resumed rollout meets the same waves it left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeship.fleet.rollout.spec import Canary, parse_max_unavailable


@dataclass(frozen=True)
class Wave:
    index: int
    name: str            # "canary", "wave 1 (10%)", ...
    devices: tuple[str, ...]  # the devices this wave adds (waves are cumulative; each lists only its new ones)


def plan_waves(device_ids: list[str], canary: Canary | None, waves: tuple[float, ...] | list[float]) -> list[Wave]:
    """Split the selected devices into the canary and the cumulative waves; empty waves are dropped."""
    ordered = sorted(device_ids)
    n = len(ordered)
    out: list[Wave] = []
    done = 0
    if canary is not None and n:
        size = canary.count if canary.count is not None else _ceil_percent(n, canary.percent or 0)
        size = max(1, min(n, size))
        out.append(Wave(0, "canary", tuple(ordered[:size])))
        done = size
    for number, percent in enumerate(waves, 1):
        upto = n if percent >= 100 else _ceil_percent(n, percent)
        if upto > done:
            out.append(Wave(len(out), f"wave {number} ({_fmt_percent(percent)})", tuple(ordered[done:upto])))
            done = upto
    return out


def resolve_max_unavailable(value, total: int) -> int:
    """How many devices may be mid-update at once: an int, or a percent of the selected devices (>= 1)."""
    kind, amount = parse_max_unavailable(value)
    if kind == "count":
        return int(amount)
    return max(1, _ceil_percent(total, amount))


def _ceil_percent(n: int, percent: float) -> int:
    # round first so 10% of 30 is 3, not 4 from float noise
    return max(1, math.ceil(round(n * percent / 100.0, 9))) if n else 0


def _fmt_percent(p: float) -> str:
    return f"{p:g}%"
