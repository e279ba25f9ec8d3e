"""Anti-rollback: a device never activates an older release of a pipeline than it has run.

Every bundle's signed `bundle.json` carries `release`, a counter per pipeline (`name`) that the
package stage raises with every build. The agent keeps, in state.json, the highest release it has
activated per pipeline (the floor). `activate` refuses a release below the floor, whoever asks and
however validly it is signed: an old bundle replayed by a manager, a URL pointing at last year's
build. Going back is only the agent's explicit `rollback` (to the kept previous release), which a
manager asks for with a signed rollback intent; it leaves the floor where it is, so the device can
return to the newer release but not further back.

Bundles without a counter (built before it existed) count as release 0: accepted until the device
has run a counted release of that pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeship.errors import AgentError

STATE_KEY = "release_floor"


def release_of(folder: Path) -> tuple[str, int]:
    """(pipeline name, release counter) from a verified release folder's bundle.json."""
    try:
        meta = json.loads((Path(folder) / "bundle.json").read_text())
    except (OSError, ValueError) as err:
        raise AgentError(f"bundle.json unreadable: {err}", "tampered") from None
    release = meta.get("release", 0) if isinstance(meta, dict) else 0
    if not isinstance(release, int) or isinstance(release, bool) or release < 0:
        raise AgentError(f"bundle.json: release must be a non-negative integer, got {release!r}", "tampered")
    return str(meta.get("name", "")), release


def check(state: dict, folder: Path) -> tuple[str, int]:
    """Raise AgentError('downgrade') when the release in `folder` is below the device's floor."""
    name, release = release_of(folder)
    floor = (state.get(STATE_KEY) or {}).get(name)
    if isinstance(floor, int) and release < floor:
        raise AgentError(f"downgrade refused: {name} release {release} is older than release {floor} this device "
                         "has run (roll back with `rollback`, or build a new release)", "downgrade",
                         {"release": release, "floor": floor})
    return name, release


def raise_floor(state: dict, name: str, release: int) -> None:
    floors = state.get(STATE_KEY)
    if not isinstance(floors, dict):
        floors = state[STATE_KEY] = {}
    if release > floors.get(name, -1):
        floors[name] = release
