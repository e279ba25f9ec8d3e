"""edgeship.targets: chip profiles (YAML, one per chip), loader, cost model.

Public API (see docs/targets.md):
    load_target(name) -> TargetProfile    # validated, local override merged; TargetError with suggestions
    list_targets() -> list[TargetProfile]
    target_names() -> list[str]
"""

from edgeship.targets.profile import (
    TargetProfile,
    canonical_format,
    deep_merge,
    list_targets,
    load_target,
    override_dir,
    target_names,
    target_schema,
    validate_profile,
)

__all__ = [
    "TargetProfile",
    "canonical_format",
    "deep_merge",
    "list_targets",
    "load_target",
    "override_dir",
    "target_names",
    "target_schema",
    "validate_profile",
]
