"""Is a wave healthy enough to go on? Activation success ratio and smoke latency against the budget.

Figures come from the device agent's activation results (its smoke test measures p95 latency on
the device); the budget comes from the artifact's bundle.json. The verdict carries the figures so
the CLI can say exactly why a rollout stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeship.fleet.rollout.spec import Gate


@dataclass(frozen=True)
class Outcome:
    """One device's result in a wave, as the gate sees it."""

    device_id: str
    ok: bool
    reason: str = ""           # the agent's reason code when not ok (smoke-failed, tampered, offline, ...)
    p95_ms: float | None = None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    figures: dict = field(default_factory=dict)


def evaluate(outcomes: list[Outcome], gate: Gate, budget_p95_ms: float | None) -> Verdict:
    """Apply the gate to a wave's outcomes. A wave with nothing to do passes."""
    attempted = len(outcomes)
    succeeded = sum(1 for o in outcomes if o.ok)
    ratio = succeeded / attempted if attempted else 1.0
    failed = [o for o in outcomes if not o.ok]
    figures: dict = {
        "attempted": attempted,
        "succeeded": succeeded,
        "success_ratio": round(ratio, 4),
        "min_success_ratio": gate.min_success_ratio,
        "failed": {o.device_id: o.reason or "failed" for o in failed},
    }
    reasons = []
    if ratio + 1e-12 < gate.min_success_ratio:
        examples = ", ".join(f"{o.device_id} {o.reason or 'failed'}" for o in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        reasons.append(f"success ratio {ratio:.2f} < {gate.min_success_ratio:.2f} "
                       f"({succeeded}/{attempted} activated; failed: {examples}{more})")
    if gate.max_smoke_p95_ratio is not None and budget_p95_ms:
        measured = [(o.p95_ms / budget_p95_ms, o) for o in outcomes if o.ok and o.p95_ms is not None]
        if measured:
            worst_ratio, worst = max(measured, key=lambda pair: pair[0])
            figures.update(worst_p95_ratio=round(worst_ratio, 6), worst_device=worst.device_id,
                           worst_p95_ms=worst.p95_ms, budget_p95_ms=budget_p95_ms,
                           max_smoke_p95_ratio=gate.max_smoke_p95_ratio)
            if worst_ratio > gate.max_smoke_p95_ratio:
                reasons.append(f"smoke p95 {worst.p95_ms:.3g} ms on {worst.device_id} is {worst_ratio:.2f}x the "
                               f"budget {budget_p95_ms:g} ms (max {gate.max_smoke_p95_ratio:g}x)")
    if reasons:
        return Verdict(False, "; ".join(reasons), figures)
    return Verdict(True, f"{succeeded}/{attempted} activated", figures)
