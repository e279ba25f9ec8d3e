"""Prometheus metrics, computed from the dashboard's snapshot at scrape time.

A custom collector (not counters bumped in place) because the truth lives in the journal and on
the devices: any process may have changed it, and a restarted dashboard must report the same
figures. Label values are bounded by the fleet (devices, rollouts, releases), never by requests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest

from edgeship.fleet.rollout.journal import STATES
from edgeship.ui.snapshots import SnapshotStore

SMOKE_BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)


class SnapshotCollector:
    def __init__(self, store: SnapshotStore):
        self.store = store

    def collect(self):
        snap = self.store.current()
        devices = GaugeMetricFamily("edgeship_devices", "Devices by fleet, health and the release they run",
                                    labels=["fleet", "state", "release"])
        counts: dict[tuple[str, str, str], int] = {}
        for fleet in snap.fleets:
            for d in fleet.devices:
                key = (fleet.name, d.health, snap.release_name(d.current) if d.current else "none")
                counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            devices.add_metric(list(key), n)
        yield devices

        state = GaugeMetricFamily("edgeship_rollout_state", "1 for the state a rollout's last run is in",
                                  labels=["rollout", "state"])
        progress = GaugeMetricFamily("edgeship_rollout_progress_ratio",
                                     "Devices of the rollout's last run on its release, over the devices it selects",
                                     labels=["rollout"])
        rollout_devices = GaugeMetricFamily("edgeship_rollout_devices", "Devices of the rollout's last run by outcome",
                                            labels=["rollout", "outcome"])
        waves = GaugeMetricFamily("edgeship_rollout_waves", "Waves of the rollout's last run by status",
                                  labels=["rollout", "status"])
        gate = GaugeMetricFamily("edgeship_gate_passed", "1 when the wave's health gate passed, 0 when it failed",
                                 labels=["rollout", "wave"])
        gate_ratio = GaugeMetricFamily("edgeship_gate_success_ratio", "Activation success ratio the gate measured",
                                       labels=["rollout", "wave"])
        gate_p95 = GaugeMetricFamily("edgeship_gate_worst_smoke_p95_ratio",
                                     "Worst smoke p95 over the budget p95 the gate measured", labels=["rollout", "wave"])
        transfer = CounterMetricFamily("edgeship_transfer_bytes", "Bytes pushed to devices, every run of the rollout",
                                       labels=["rollout"])
        for r in snap.rollouts:
            for s in STATES:
                state.add_metric([r.name, s], 1.0 if r.state == s else 0.0)
            progress.add_metric([r.name], r.progress)
            pending = max(0, r.devices_total - r.devices_done - r.devices_failed - r.rolled_back)
            for outcome, n in (("activated", r.devices_done), ("failed", r.devices_failed),
                               ("rolled_back", r.rolled_back), ("pending", pending)):
                rollout_devices.add_metric([r.name, outcome], n)
            for status in ("waiting", "in progress", "passed", "failed"):
                waves.add_metric([r.name, status.replace(" ", "_")], sum(1 for w in r.waves if w.status == status))
            for w in r.waves:
                if w.gate is None:
                    continue
                gate.add_metric([r.name, w.name], 1.0 if w.gate.ok else 0.0)
                if isinstance(w.gate.figures.get("success_ratio"), (int, float)):
                    gate_ratio.add_metric([r.name, w.name], float(w.gate.figures["success_ratio"]))
                if isinstance(w.gate.figures.get("worst_p95_ratio"), (int, float)):
                    gate_p95.add_metric([r.name, w.name], float(w.gate.figures["worst_p95_ratio"]))
            transfer.add_metric([r.name], r.bytes_total)
        yield from (state, progress, rollout_devices, waves, gate, gate_ratio, gate_p95, transfer)

        smoke = HistogramMetricFamily("edgeship_smoke_latency_ms",
                                      "Device smoke-test p95 latency (ms) of the successful activations, per release",
                                      labels=["release"])
        by_release: dict[str, list[float]] = {}
        for r in snap.rollouts:
            by_release.setdefault(snap.release_name(r.artifact), []).extend(r.smoke_p95_ms)
        for release, values in sorted(by_release.items()):
            if not values:
                continue
            buckets = [(f"{b:g}", float(sum(1 for v in values if v <= b))) for b in SMOKE_BUCKETS_MS]
            buckets.append(("+Inf", float(len(values))))
            smoke.add_metric([release], buckets, sum(values))
        yield smoke

        budget = GaugeMetricFamily("edgeship_build_budget_passed",
                                   "1 when the newest artifact of the pipeline for the target met every budget, 0 when not",
                                   labels=["pipeline", "target", "release"])
        for pipeline, artifacts in snap.compare().items():
            for a in artifacts:
                if a.verdict is not None:
                    budget.add_metric([pipeline, a.target, snap.release_name(a.digest)], 1.0 if a.verdict else 0.0)
        yield budget


def registry_for(store: SnapshotStore) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
