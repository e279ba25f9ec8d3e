"""A device belongs to one rollout at a time (like a device in one thing-group deployment).

Why: two rollouts (or a rollout and a manual `deploy`) selecting the same device would move it
back and forth, each reporting success. The owner is the `rollout` column of the journal's
`applied` table (the release each device was last given, and by whom): a run claims every device
it selects when it starts, `plan` shows devices owned by another rollout, and `apply` refuses them
unless told `--take-over`. `deploy --take-over` detaches devices from their rollout (owner "").
"""

from __future__ import annotations

from edgeship.errors import RolloutError
from edgeship.fleet.rollout.journal import Journal

NO_OWNER = ""


def owners(journal: Journal, fleet: str, device_ids) -> dict[str, str]:
    """device -> the rollout that owns it, for the given devices that have an owner."""
    applied = journal.applied(fleet)
    wanted = set(device_ids)
    return {d: a["rollout"] for d, a in applied.items() if d in wanted and a.get("rollout")}


def foreign(journal: Journal, fleet: str, device_ids, rollout: str) -> dict[str, str]:
    """The devices among `device_ids` that belong to a rollout other than `rollout`."""
    return {d: owner for d, owner in owners(journal, fleet, device_ids).items() if owner != rollout}


def describe(taken: dict[str, str]) -> str:
    """`2 device(s) of rollout kws-v1 (dev-000, dev-001)`, grouped by owner."""
    by_owner: dict[str, list[str]] = {}
    for device, owner in sorted(taken.items()):
        by_owner.setdefault(owner, []).append(device)
    parts = []
    for owner, devices in by_owner.items():
        shown = ", ".join(devices[:5]) + (f" and {len(devices) - 5} more" if len(devices) > 5 else "")
        parts.append(f"{len(devices)} device(s) of rollout {owner} ({shown})")
    return "; ".join(parts)


def refuse_or_take(journal: Journal, fleet: str, device_ids, rollout: str, take_over: bool, log) -> None:
    """Raise RolloutError when another rollout owns some of the devices, unless `take_over`."""
    taken = foreign(journal, fleet, device_ids, rollout)
    if not taken:
        return
    if not take_over:
        raise RolloutError(f"{rollout}: {describe(taken)} belong to another rollout; "
                           f"`edgeship apply --take-over` moves them to {rollout}")
    log(f"{rollout}: taking over {describe(taken)}")


def claim(journal: Journal, fleet: str, currents: dict[str, str | None], rollout: str) -> None:
    """Make `rollout` the owner of these devices, keeping the release the journal last gave each
    (drift detection stays right); a device never given one records what it runs now."""
    applied = journal.applied(fleet)
    for device, current in currents.items():
        last = applied.get(device)
        if last is not None and last.get("rollout") == rollout:
            continue
        digest, previous = (last["digest"], last["previous"]) if last is not None else (current, None)
        journal.set_applied(fleet, device, digest, previous, rollout)


def release(journal: Journal, fleet: str, deployed: dict[str, str]) -> None:
    """`deploy --take-over`: these devices now run `deployed[device]` and belong to no rollout."""
    for device, digest in deployed.items():
        last = journal.applied(fleet).get(device) or {}
        journal.set_applied(fleet, device, digest, last.get("digest"), NO_OWNER)
