"""`edgeship plan`: per device, the release it runs, the one it should run, and what apply would do.

Actions: `none` (already there), `push+activate`, `drift` (the device runs something other than the
release the journal last gave it: apply re-converges it), `unreachable` (status unknown: an error),
`wrong-target` (the artifact is built for another target than the device's: an error, never sent).
A device running an artifact signed by a key the fleet's trust document revoked says so in its note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeship import artifact
from edgeship.fleet.rollout.devices import failure_reason

NONE, CHANGE, DRIFT, UNREACHABLE, WRONG_TARGET = "none", "push+activate", "drift", "unreachable", "wrong-target"


@dataclass(frozen=True)
class PlanRow:
    device_id: str
    transport: str
    wave: str
    current: str | None
    desired: str
    action: str
    note: str = ""


def make_plan(devices: list, waves: list, digest: str, statuses: dict, applied: dict) -> list[PlanRow]:
    """Rows in wave order. `statuses` maps id -> DeviceState or an error; `applied` is the journal's."""
    wave_of = {d: w.name for w in waves for d in w.devices}
    by_id = {d.id: d for d in devices}
    order = [d for w in waves for d in w.devices]
    rows = []
    for device_id in order:
        device = by_id[device_id]
        state = statuses.get(device_id)
        if state is None or isinstance(state, Exception) or _unreachable(state):
            rows.append(PlanRow(device_id, device.transport, wave_of[device_id], None, digest, UNREACHABLE,
                                _why_unreachable(state)))
            continue
        current = state.current
        last = (applied.get(device_id) or {}).get("digest")
        note = "offline" if not getattr(state, "online", True) else "empty" if current is None else ""
        if current == digest:
            rows.append(PlanRow(device_id, device.transport, wave_of[device_id], current, digest, NONE, note))
        elif last and current != last:
            drift = f"running {_short(current)}, last applied {_short(last)}"
            rows.append(PlanRow(device_id, device.transport, wave_of[device_id], current, digest, DRIFT,
                                f"{drift}; {note}" if note else drift))
        else:
            rows.append(PlanRow(device_id, device.transport, wave_of[device_id], current, digest, CHANGE, note))
    return rows


def _why_unreachable(state) -> str:
    """The note of a device whose status is unknown, led by the transport's reason when it is not
    plain `unreachable` (a refused host key says `host-key: ...`)."""
    if state is None:
        return "no status"
    if isinstance(state, Exception):
        reason = failure_reason(state)
        return str(state) if reason == "unreachable" else f"{reason}: {state}"
    return str((state.last_result or {}).get("message") or "no status")


def _unreachable(state) -> bool:
    """Offline and its release unknown: a transport that could not ask (ssh) says reason `unreachable`.
    (An MQTT device that is offline still has its retained report, so its release is known.)"""
    last = state.last_result if isinstance(state.last_result, dict) else {}
    return not state.online and state.current is None and last.get("reason") == "unreachable"


def has_changes(rows: list[PlanRow]) -> bool:
    return any(r.action in (CHANGE, DRIFT) for r in rows)


def has_errors(rows: list[PlanRow]) -> bool:
    return any(r.action in (UNREACHABLE, WRONG_TARGET) for r in rows)


def bind_targets(rows: list[PlanRow], refused: dict[str, str]) -> list[PlanRow]:
    """Rows of devices the artifact is not built for become `wrong-target` (target_binding.py)."""
    return [replace(r, action=WRONG_TARGET, note=refused[r.device_id]) if r.device_id in refused else r for r in rows]


def mark_revoked(rows: list[PlanRow], signers_of, revoked: frozenset) -> list[PlanRow]:
    """Note the devices whose running release is signed by a revoked key (`signers_of(digest)`)."""
    if not revoked:
        return rows
    out = []
    for r in rows:
        bad = [k for k in (signers_of(r.current) if r.current else []) if k in revoked]
        if bad:
            note = f"runs {_short(r.current)} signed by revoked key {bad[0]}"
            r = replace(r, note=f"{r.note}; {note}" if r.note else note)
        out.append(r)
    return out


def summary(rows: list[PlanRow]) -> str:
    change = sum(r.action == CHANGE for r in rows)
    drift = sum(r.action == DRIFT for r in rows)
    none = sum(r.action == NONE for r in rows)
    unreachable = sum(r.action == UNREACHABLE for r in rows)
    wrong = sum(r.action == WRONG_TARGET for r in rows)
    text = f"Plan: {change + drift} to change ({drift} drifted), {none} unchanged"
    if unreachable:
        text += f", {unreachable} unreachable"
    if wrong:
        text += f", {wrong} refused (wrong target)"
    return text + f", {len(rows)} selected."


def format_table(rows: list[PlanRow]) -> str:
    header = ("DEVICE", "TRANSPORT", "WAVE", "CURRENT", "DESIRED", "ACTION", "NOTE")
    body = [(r.device_id, r.transport, r.wave, _short(r.current), _short(r.desired), r.action, r.note) for r in rows]
    return render_table(header, body)


def render_table(header: tuple, body: list[tuple]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *body)]
    return "\n".join(lines)


def _short(digest: str | None) -> str:
    return artifact.short(digest) if digest else "-"
