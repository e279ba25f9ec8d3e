"""A rollout's status, derived from what its devices run now, not only from its last run's record.

Why: a run's record goes stale the moment anything else touches the fleet (a later run that found
nothing to do, a `git revert`, a device rolled back by hand). Like Argo CD, two answers are given:

    sync    Synced      every selected device runs the rollout's artifact
            OutOfSync   some device runs something else (or nothing)
            Unknown     some device could not be asked
    health  Healthy     Synced and every device reachable
            Progressing a run is under way
            Suspended   a run is paused
            Degraded    anything else: devices off target after a failed, aborted or rolled-back
                        run, drifted, offline or unreachable
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeship.fleet.rollout.devices import failure_reason

SYNCED, OUT_OF_SYNC, UNKNOWN = "Synced", "OutOfSync", "Unknown"
HEALTHY, PROGRESSING, SUSPENDED, DEGRADED = "Healthy", "Progressing", "Suspended", "Degraded"


@dataclass
class LiveStatus:
    sync: str
    health: str
    wanted: str
    on_target: list[str] = field(default_factory=list)
    elsewhere: dict[str, str | None] = field(default_factory=dict)   # device -> the release it runs (None: nothing)
    unreachable: dict[str, str] = field(default_factory=dict)        # device -> reason (host-key, unreachable, ...)
    offline: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.on_target) + len(self.elsewhere) + len(self.unreachable)

    def to_dict(self) -> dict:
        return {"sync": self.sync, "health": self.health, "wanted": self.wanted, "devices": self.total,
                "on_target": sorted(self.on_target), "elsewhere": dict(sorted(self.elsewhere.items())),
                "unreachable": dict(sorted(self.unreachable.items())), "offline": sorted(self.offline)}


def derive(run_state: str, wanted: str, statuses: dict) -> LiveStatus:
    """`statuses`: device id -> DeviceState or the error that kept us from reading it."""
    live = LiveStatus("", "", wanted)
    for device_id, state in sorted(statuses.items()):
        if isinstance(state, Exception):
            live.unreachable[device_id] = failure_reason(state)
            continue
        last = state.last_result if isinstance(state.last_result, dict) else {}
        if not state.online and state.current is None and last.get("reason"):
            live.unreachable[device_id] = str(last["reason"])  # a transport that could not ask (ssh)
            continue
        if not state.online:
            live.offline.append(device_id)
        if state.current == wanted:
            live.on_target.append(device_id)
        else:
            live.elsewhere[device_id] = state.current
    live.sync = UNKNOWN if live.unreachable else OUT_OF_SYNC if live.elsewhere else SYNCED
    if run_state == "running":
        live.health = PROGRESSING
    elif run_state == "paused":
        live.health = SUSPENDED
    elif live.sync == SYNCED and not live.offline:
        live.health = HEALTHY
    else:
        live.health = DEGRADED
    return live


def summary(live: LiveStatus, short) -> str:
    """One line: how many devices run the artifact, and who does not (with what or why)."""
    parts = [f"{len(live.on_target)}/{live.total} device(s) on {short(live.wanted)}"]
    if live.elsewhere:
        shown = ", ".join(f"{d} ({short(c) if c else 'empty'})" for d, c in list(live.elsewhere.items())[:5])
        parts.append(f"elsewhere: {shown}" + (" ..." if len(live.elsewhere) > 5 else ""))
    if live.unreachable:
        shown = ", ".join(f"{d} ({why})" for d, why in list(live.unreachable.items())[:5])
        parts.append(f"not reachable: {shown}")
    if live.offline:
        parts.append(f"offline: {', '.join(live.offline[:5])}")
    return "; ".join(parts)


def devices_pushed(steps: list[dict]) -> set[str]:
    """The devices a run's journaled steps sent bytes to (for bytes sent per device vs the artifact)."""
    return {s["device"] for s in steps if s["action"] == "push" and s["phase"] == "end" and s["ok"] and s["bytes"]}
