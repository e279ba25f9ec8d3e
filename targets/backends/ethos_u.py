"""Facts about an Arm Ethos-U configuration as Vela names it (`ethos-u55-128`): its MACs per cycle.

The cost model reads them when a profile's own peak is not public (the PSOC Edge E84): the NPU then
has exactly the MAC count the backend compiles for, so the roofline and Vela describe one machine.
"""

from __future__ import annotations

import re

_CONFIG = re.compile(r"^ethos-u(55|65|85)-(\d+)$")


def macs_per_cycle(accelerator_config: str, fmt: str = "int8") -> int | None:
    """8x8 MACs per cycle (int8); 16x8 runs at half that rate on U55/U65 (Arm's U55 TRM: 2 cycles per
    16-bit MAC). None for a name that is not an Ethos-U configuration."""
    m = _CONFIG.match(str(accelerator_config or ""))
    if not m:
        return None
    macs = int(m.group(2))
    if fmt in ("int16", "int16x8", "uint16") and m.group(1) in ("55", "65"):
        return macs // 2
    return macs


# Every Ethos-U55/U65 configuration's MAC array reduces over 8 input channels at a time (the IFM
# micro-block depth, `ifm_ublock` in Vela's architecture_features.ArchitectureFeatures.accelerator_configs);
# the U85 shows the same small-depth penalty in Vela's per-layer cycles.
REDUCTION_GRANULE = 8


def reduction_granule(data: dict) -> int | None:
    """Input-channel granule of the NPU the profile's Vela backend compiles for (None: not an Ethos-U).

    A convolution whose reduction depth (input channels per group) is below or not a multiple of it
    leaves MAC lanes idle: a depthwise conv (depth 1) or a 1-channel stem runs at 1/8 of peak at best,
    which Vela's per-layer cycles show (kws on ethos-u55-128: 7-10% MAC utilisation for those, 67%
    for the 64-channel pointwise convs)."""
    backend = data.get("backend") or {}
    if backend.get("name") != "vela":
        return None
    return REDUCTION_GRANULE if _CONFIG.match(str((backend.get("options") or {}).get("accelerator_config", ""))) else None


def backend_peak_ops_per_s(data: dict, fmt: str) -> float | None:
    """Peak ops/s (2 per MAC) of the accelerator the profile's Vela backend compiles for."""
    backend = data.get("backend") or {}
    if backend.get("name") != "vela":
        return None
    macs = macs_per_cycle((backend.get("options") or {}).get("accelerator_config", ""), fmt)
    clock = ((data.get("compute") or {}).get("accelerator") or {}).get("clock_mhz")
    if not macs or not clock:
        return None
    return 2.0 * macs * float(clock) * 1e6
