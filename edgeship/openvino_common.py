"""What the OpenVINO backend (the build) and the device agent's OpenVINO runner share: the telemetry
opt-out made before either imports openvino, the run-settings file the backend writes next to the IR,
and how OpenVINO's element types print.

Kept in the core, apart from both: the agent must not import the build side (edgeship.targets loads the
profile schemas) just to decline telemetry.
"""

from __future__ import annotations

from pathlib import Path

TELEMETRY_CONSENT = ("intel", "openvino_telemetry")  # under the home folder; "0" = declined (openvino_telemetry's format)
DEVICE_CONFIG = "openvino.json"  # next to the IR: the device, precision and threads the device agent compiles with


def opt_out_of_telemetry() -> Path | None:
    """Write OpenVINO's telemetry opt-out before the first import; keep a consent file the user already has."""
    try:
        consent = Path.home().joinpath(*TELEMETRY_CONSENT)
        if not consent.exists():
            consent.parent.mkdir(parents=True, exist_ok=True)
            consent.write_text("0")
        return consent
    except OSError:  # read-only home: openvino_telemetry then cannot write its id either
        return None


def telemetry_state() -> str:
    """What OpenVINO's consent file says, for the report."""
    consent = Path.home().joinpath(*TELEMETRY_CONSENT)
    try:
        value = consent.read_text().strip()
    except OSError:
        return f"no consent file ({consent}): OpenVINO decides"
    return f"declined ({consent})" if value == "0" else f"the user's own choice {value!r} ({consent})"


def type_name(value) -> str:
    """OpenVINO element types print as "<Type: 'float32'>"; reports want "f32"."""
    getter = getattr(value, "get_type_name", None)
    return str(getter()) if callable(getter) else str(value)
