"""The figures the legalizer and the cost model read from a chip profile, with their defaults.

Accepts a `TargetProfile` (from `load_target`) or a plain profile dict (tests build those by hand),
so the pure logic never depends on files on disk.
"""

from __future__ import annotations

from edgeship.targets.profile import TargetProfile, canonical_format

DEFAULT_EFFICIENCY = 0.3
INDEX_FORMATS = {"int64", "int32", "bool", "fp64"}


class ProfileView:
    def __init__(self, profile: TargetProfile | dict):
        self.profile = profile if isinstance(profile, TargetProfile) else TargetProfile(profile)
        self.data = self.profile.data

    @property
    def name(self) -> str:
        return self.data.get("metadata", {}).get("name", "?")

    @property
    def has_host(self) -> bool:
        return self.data.get("compute", {}).get("host") is not None

    # -- compute -----------------------------------------------------------------------------------
    def peak_ops_per_s(self, unit: str, fmt: str) -> tuple[float | None, str]:
        """(peak ops/s, note). A format the unit has no figure for falls back to its float32 figure
        (or the lowest figure it has), and says so."""
        if unit == "host" and not self.has_host:
            unit = "accelerator"
        if fmt in INDEX_FORMATS:  # shape arithmetic and indices: tiny, runs on the scalar/float path
            fmt = "float32"
        peak = self.profile.peak_ops_per_s(fmt, unit)
        if not peak and canonical_format(fmt) in ("int16", "uint16"):
            peak = self.profile.peak_ops_per_s("int16x8", unit)  # int16 activations x int8 weights
        if peak:
            return peak, ""
        cu = self.data.get("compute", {}).get(unit) or {}
        known = {canonical_format(k): float(v) * 1e12 for k, v in (cu.get("peak_tops") or {}).items() if v}
        if not known and unit == "accelerator":
            from edgeship.targets.backends.ethos_u import backend_peak_ops_per_s

            backend_peak = backend_peak_ops_per_s(self.data, canonical_format(fmt))
            if backend_peak:
                return backend_peak, "accelerator peak from the Vela accelerator config the backend compiles for"
        if not known:
            return None, f"{unit} peak compute not public: compute time not estimated (bandwidth and overhead only)"
        if "float32" in known and not fmt.startswith("int"):
            return known["float32"], ""
        low = min(known, key=known.get)
        return known[low], f"{unit} has no {fmt} peak figure: assumed its {low} peak"

    def efficiency(self, op_type: str) -> float:
        table = self.data.get("cost_model", {}).get("efficiency") or {}
        return float(table.get(op_type, table.get("default", DEFAULT_EFFICIENCY)))

    def has_efficiency(self, key: str) -> bool:
        return key in (self.data.get("cost_model", {}).get("efficiency") or {})

    def bandwidth_efficiency(self) -> float:
        return float(self.data.get("cost_model", {}).get("bandwidth_efficiency", 1.0) or 1.0)

    def reduction_granule(self) -> int | None:
        """Input channels the accelerator's MAC array reduces at a time (Ethos-U: 8), if known."""
        from edgeship.targets.backends.ethos_u import reduction_granule

        return reduction_granule(self.data)

    def per_node_overhead_us(self) -> float:
        return float(self.data.get("cost_model", {}).get("per_node_overhead_us", 0.0) or 0.0)

    def per_run_overhead_us(self) -> float:
        """Fixed cost of one inference call (runtime entry, input/output binding). Read from
        cost_model.per_run_overhead_us, else from the `calibrated` record `edgeship calibrate` writes."""
        cm = self.data.get("cost_model", {}) or {}
        value = cm.get("per_run_overhead_us", (cm.get("calibrated") or {}).get("per_run_overhead_us", 0.0))
        return float(value or 0.0)

    def unit_is_cpu(self, unit: str) -> bool:
        """The unit is a general-purpose CPU (its int8 rate comes from dot-product SIMD instructions)."""
        if unit == "host" and not self.has_host:
            unit = "accelerator"
        cu = self.data.get("compute", {}).get(unit) or {}
        if cu.get("kind"):
            return cu["kind"] in ("cpu", "mcu")
        return unit == "host" or self.data.get("chip", {}).get("class") == "cpu"

    def runs_onnxruntime_cpu(self) -> bool:
        runtime = self.data.get("runtime", {}) or {}
        return runtime.get("kind") == "onnxruntime" and runtime.get("execution_provider") == "CPUExecutionProvider"

    def calibrated(self) -> dict | None:
        return self.data.get("cost_model", {}).get("calibrated")

    # -- memory ------------------------------------------------------------------------------------
    def _mem(self, key: str) -> float | None:
        value = self.data.get("memory", {}).get(key)
        return float(value) if value is not None else None

    def bandwidth_bytes_per_s(self) -> float | None:
        bw = self._mem("bandwidth_gb_s")
        return bw * 1e9 if bw else None

    def host_link_bytes_per_s(self) -> float | None:
        bw = self._mem("host_link_gb_s")
        return bw * 1e9 if bw else self.bandwidth_bytes_per_s()

    def host_link_latency_us(self) -> float:
        return self._mem("host_link_latency_us") or 0.0

    def sram_bytes(self) -> int | None:
        kb = self._mem("sram_kb")
        return int(kb * 1024) if kb else None

    def dram_bytes(self) -> int | None:
        mb = self._mem("dram_mb")
        return int(mb * 1024 * 1024) if mb else None

    # -- operators ---------------------------------------------------------------------------------
    def op_limits(self, op_type: str) -> dict | None:
        return self.profile.supports_op(op_type)

    def formats(self) -> set[str]:
        return {canonical_format(f) for f in self.data.get("formats", [])}

    def host_fallback(self) -> bool:
        return bool(self.data.get("host_fallback", {}).get("enabled")) and self.has_host

    def host_runs(self, op_type: str) -> bool:
        return self.has_host and self.profile.host_runs(op_type)

    def host_formats(self) -> set[str] | None:
        fmts = self.data.get("host_fallback", {}).get("dtypes")
        return {canonical_format(f) for f in fmts} if fmts else None

    def roofs(self) -> dict:
        """Roofline roofs for the report: peak ops/s per format and per unit, bandwidth."""
        out: dict = {"bandwidth_gb_s": self._mem("bandwidth_gb_s"), "bandwidth_efficiency": self.bandwidth_efficiency()}
        for unit in ("accelerator", "host"):
            cu = self.data.get("compute", {}).get(unit) or {}
            out[unit] = {canonical_format(k): v for k, v in (cu.get("peak_tops") or {}).items() if v}
        return out
