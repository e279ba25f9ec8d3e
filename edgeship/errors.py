"""Typed errors. The CLI turns each into one clear line (or one line per diagnostic) and an exit code.

Every error that comes from user input carries where it came from: a file:line:col, a device id,
a stage name. Nothing here formats a traceback: a traceback is a bug in edgeship, not in the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class EdgeshipError(Exception):
    """Base of every error edgeship reports to a user. `exit_code` is what the CLI exits with."""

    exit_code = 1


@dataclass(frozen=True)
class Diagnostic:
    """One problem in one manifest, located as precisely as the YAML allows."""

    file: str
    line: int
    col: int
    path: str  # dotted field path, e.g. "budget.latency_ms.p95" or "devices[2].id"
    message: str
    hint: str = ""
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        field_path = self.path or "<document>"
        text = f"{where}: {field_path}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.severity == "warning":
            text = f"{where}: warning: {field_path}: {self.message}" + (f" ({self.hint})" if self.hint else "")
        return text


class ManifestError(EdgeshipError):
    """A manifest (or several) failed to load or validate. Holds every diagnostic, not just the first."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = [d for d in diagnostics if d.severity == "error"] or list(diagnostics)
        self.warnings = [d for d in diagnostics if d.severity == "warning"]
        super().__init__("\n".join(str(d) for d in diagnostics))


class UsageError(EdgeshipError):
    """The command line itself is wrong (a missing file, a bad flag value)."""

    exit_code = 2


class TargetError(EdgeshipError):
    """An unknown target name or an invalid chip profile."""

    exit_code = 2


class BuildError(EdgeshipError):
    """A stage failed. Carries the stage name so the user knows where."""

    def __init__(self, message: str, stage: str | None = None):
        self.stage = stage
        super().__init__(f"{stage}: {message}" if stage else message)


@dataclass
class BudgetRow:
    metric: str
    budget: str
    measured: str
    by: str  # how much over/under, human readable


class BudgetExceeded(BuildError):
    """One or more budgets failed; `rows` is the table the CLI prints."""

    def __init__(self, rows: list[BudgetRow], stage: str = "validate"):
        self.rows = rows
        names = ", ".join(r.metric for r in rows)
        super().__init__(f"budget exceeded: {names}", stage=stage)


class LegalizeError(BuildError):
    """Nodes the target cannot run and cannot fall back for."""


class ArtifactError(EdgeshipError):
    """A bundle is corrupt, tampered, unsigned or signed by an untrusted key.

    `reason` is machine-readable: tampered, missing-file, extra-file, unsigned, bad-signature,
    untrusted-key, revoked-key, threshold, unsafe-member, oversize, not-a-bundle.
    """

    exit_code = 1

    def __init__(self, message: str, reason: str = "invalid"):
        self.reason = reason
        super().__init__(message)


class TransportError(EdgeshipError):
    """A device could not be reached or a transfer failed. Always names the device."""

    def __init__(self, device_id: str, message: str):
        self.device_id = device_id
        super().__init__(f"{device_id}: {message}")


class AgentError(EdgeshipError):
    """The device agent refused or failed an operation; the running release is untouched."""

    def __init__(self, message: str, reason: str = "error", figures: dict | None = None):
        self.reason = reason  # machine-readable: tampered, bad-signature, unsigned, smoke-failed, disk-full, ...
        self.figures = figures or {}
        super().__init__(message)


class RolloutError(EdgeshipError):
    """A rollout stopped: a gate failed, it was aborted, or its state is inconsistent."""


@dataclass
class ErrorReport:
    """Structured form of an error for JSON output (reports, MQTT `reported` messages)."""

    kind: str
    message: str
    details: dict = field(default_factory=dict)


class ToolchainError(BuildError):
    """A vendor toolchain environment is missing or broken, or its worker failed. Always names the toolchain."""

    def __init__(self, toolchain: str, message: str, stage: str | None = None):
        self.toolchain = toolchain
        super().__init__(f"toolchain {toolchain}: {message}", stage=stage)
