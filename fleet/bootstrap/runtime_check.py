"""Which runtime a board needs for its target's artifacts, held against what its agent reports.

Why: `fleet bootstrap` installs one wheelhouse's extras on every board; an Intel board set up with the
default `agent` extra would take its first OpenVINO release and fail the smoke test. The target
profile names the backend that builds for the board, the backend the runtime its artifacts name, and
fleet/runtimes.py how a board gets that runtime.
"""

from __future__ import annotations

from edgeship.errors import TargetError
from edgeship.fleet.runtimes import RUNTIMES, extras_for


def target_runtime(target: str | None) -> str | None:
    """The runtime `target`'s artifacts name (None: unknown target or a third-party backend)."""
    from edgeship.targets import load_target
    from edgeship.targets.backends import artifact_runtime

    if not target:
        return None
    try:
        return artifact_runtime(load_target(target).data)
    except TargetError:
        return None


def wheelhouse_extras(devices) -> str:
    """The extras a wheelhouse for these boards needs: the agent plus their targets' runtimes."""
    return extras_for({target_runtime(d.target) for d in devices} - {None})


def missing_runtime(device, agent_report: dict | None) -> str | None:
    """One note when the board's agent lacks the runtime its target's artifacts need; None when it has it."""
    runtime = RUNTIMES.get(target_runtime(device.target) or "")
    if runtime is None or runtime.installed_in((agent_report or {}).get("runtimes") or {}):
        return None
    fix = (f"build the wheelhouse with --extras {extras_for([runtime.name])} and bootstrap --upgrade" if runtime.extra
           else runtime.install)
    return f"{device.target} releases run on {runtime.name}, which this agent lacks: {fix}"
