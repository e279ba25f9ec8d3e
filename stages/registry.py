"""The stage registry: stage name -> class.

Built-in stages register themselves with `@register` when their module is imported; third-party
stages come from the entry-point group `edgeship.stages` (`name = "package.module:StageClass"`).

Fail closed: a built-in stage whose module cannot be imported is a broken install, and skipping it
would ship artifacts without (say) the budget check, so asking for it raises a one-line BuildError.
A third-party plugin that fails to load only matters to the pipelines that list it: loading keeps
its error (shown as a warning by `load_warnings()`) and raises it when a pipeline asks for the stage.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata

from edgeship.errors import BuildError

ENTRY_POINT_GROUP = "edgeship.stages"
DEFAULT_ORDER = ("import", "normalize", "optimize", "quantize", "legalize", "lower", "estimate", "validate", "package")
# stage name -> module under edgeship.stages that defines it
BUILTIN_MODULES = {
    "import": "importer",
    "normalize": "normalize",
    "optimize": "optimize",
    "quantize": "quantize",
    "legalize": "legalize",
    "lower": "lower",
    "estimate": "estimate",
    "validate": "validate",
    "package": "package",
}

_registry: dict[str, type] = {}
_broken: dict[str, BuildError] = {}  # stage name -> why its module or entry point did not load
_loaded = False


def register(cls: type) -> type:
    """Class decorator: add a stage (needs class attributes `name`, `version` and methods `key`, `run`)."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__}: a stage needs a non-empty class attribute `name`")
    if not isinstance(getattr(cls, "version", None), str):
        raise TypeError(f"{cls.__qualname__}: a stage needs a string class attribute `version`")
    for method in ("key", "run"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__qualname__}: a stage needs a method `{method}(ctx)`")
    existing = _registry.get(name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"stage {name!r} is registered twice: {existing.__module__} and {cls.__module__}")
    _registry[name] = cls
    return cls


def _load_builtin(name: str) -> None:
    module = BUILTIN_MODULES.get(name)
    if module is None:
        return
    full = f"edgeship.stages.{module}"
    try:
        importlib.import_module(full)
    except Exception as err:  # ImportError, or any error raised while the module runs
        detail = f"{type(err).__name__}: {err}".replace("\n", " ")
        _broken[name] = BuildError(f"built-in stage cannot be loaded ({full}: {detail}); "
                                   "the installation is broken, reinstall edgeship", stage=name)


def _load_entry_points() -> None:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not stop a build
        return
    for ep in eps:
        if ep.name in _registry:
            continue
        try:
            cls = ep.load()
            if getattr(cls, "name", None) != ep.name:
                raise BuildError(f"entry point {ep.name!r} loads a stage named {getattr(cls, 'name', None)!r}", stage=ep.name)
            register(cls)
        except BuildError as err:
            _broken[ep.name] = err
        except Exception as err:
            _broken[ep.name] = BuildError(f"third-party stage ({ep.value}) failed to load: {type(err).__name__}: {err}",
                                          stage=ep.name)


def load_all() -> None:
    """Import every built-in stage module that exists, then the third-party entry points (once)."""
    global _loaded
    if _loaded:
        return
    _broken.clear()
    for name in DEFAULT_ORDER:
        _load_builtin(name)
    _load_entry_points()
    _loaded = True


def reload() -> None:
    """Scan the entry points again (after installing a plugin in a running process, and in tests)."""
    global _loaded
    _loaded = False
    load_all()


def available(name: str) -> bool:
    load_all()
    return name in _registry


def load_warnings() -> list[str]:
    """One line per third-party stage that failed to load (built-in failures are errors, via `get`)."""
    load_all()
    return [str(err) for name, err in _broken.items() if name not in DEFAULT_ORDER]


def get(name: str) -> type:
    """The stage class registered under `name`; BuildError with the nearest names when unknown."""
    load_all()
    if name in _broken and name not in _registry:
        raise _broken[name]
    try:
        return _registry[name]
    except KeyError:
        near = difflib.get_close_matches(name, list(_registry) + list(DEFAULT_ORDER), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise BuildError(f"unknown stage {name!r}{hint}", stage=name) from None


def names() -> list[str]:
    """Registered stage names: built-ins in pipeline order, then third-party ones sorted."""
    load_all()
    builtin = [n for n in DEFAULT_ORDER if n in _registry]
    return builtin + sorted(n for n in _registry if n not in DEFAULT_ORDER)


def is_known(name: str) -> bool:
    """A name the pipeline may list: a built-in stage, a registered plugin, or a plugin that failed to load."""
    return name in DEFAULT_ORDER or available(name) or name in _broken


__all__ = ["register", "get", "names", "available", "load_warnings", "load_all", "reload", "is_known", "DEFAULT_ORDER", "ENTRY_POINT_GROUP"]
