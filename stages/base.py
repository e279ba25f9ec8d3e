"""The stage protocol, and a small base class that computes a stage's cache key.

A stage's key is the digest of everything its output depends on: its name, its version, its
config (the slice of the manifest it reads) and the digests of its inputs (the current model,
data files, the target profile). Two builds whose stage keys match produce the same output, so the
runner can take it from the cache instead of running the stage. A stage must therefore put into
its key everything it reads and nothing it does not: the budget is not in `optimize`'s key, so
changing a budget never re-optimizes.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from edgeship.errors import BuildError

if TYPE_CHECKING:  # pragma: no cover
    from edgeship.pipelines.context import BuildContext


@runtime_checkable
class Stage(Protocol):
    name: ClassVar[str]  # registry key, as written in manifests and reports
    version: ClassVar[str]  # bump when behaviour changes: it is part of the cache key

    def key(self, ctx: "BuildContext") -> str: ...

    def run(self, ctx: "BuildContext") -> "BuildContext": ...


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(name: str, version: str, config: Any, inputs: dict[str, Any]) -> str:
    """sha256 over name, version, config and input digests (canonical JSON)."""
    doc = {"stage": name, "version": version, "config": config, "inputs": inputs}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


class BaseStage:
    """Helper base: override `config(ctx)` (what the stage reads from the manifest) and, when the
    stage reads more than the current model, `input_digests(ctx)`. `key` is then derived.

    `config_schema` (optional JSON Schema) types the config: it is checked before the key is made,
    so a bad config fails before any work, naming the stage.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    config_schema: ClassVar[dict | None] = None
    uses_target: ClassVar[bool] = False  # True: the target profile's content is part of the key

    def config(self, ctx: "BuildContext") -> Any:
        return {}

    def input_digests(self, ctx: "BuildContext") -> dict[str, Any]:
        digests: dict[str, Any] = {"model": ctx.digests.get("model", "")}
        if self.uses_target:
            digests["target"] = ctx.target_digest()
        return digests

    def checked_config(self, ctx: "BuildContext") -> Any:
        config = self.config(ctx)
        if self.config_schema is not None:
            import jsonschema

            try:
                jsonschema.validate(config, self.config_schema)
            except jsonschema.ValidationError as err:
                where = ".".join(str(p) for p in err.absolute_path) or "<config>"
                raise BuildError(f"config {where}: {err.message}", stage=self.name) from None
        return config

    def key(self, ctx: "BuildContext") -> str:
        return stage_key(self.name, self.version, self.checked_config(ctx), self.input_digests(ctx))

    def cache_ok(self, ctx: "BuildContext") -> bool:
        """Called after a cache hit has been restored into ctx; False makes the runner run the stage
        anyway (e.g. package checks its artifact is still in the store)."""
        return True

    def run(self, ctx: "BuildContext") -> "BuildContext":  # pragma: no cover - abstract
        raise NotImplementedError


__all__ = ["Stage", "BaseStage", "stage_key", "canonical_json"]
