"""Chip profiles: load a Target YAML, merge the local override, validate it, wrap it.

Profiles are data (one YAML per chip under targets/profiles/); this module is the only code that
reads them, so every stage sees the same validated, override-merged view. A local override in
`state_dir()/targets/<name>.yaml` (written by `edgeship calibrate`, or by hand) is deep-merged on
top: mappings merge key by key, everything else (lists, scalars, null) replaces.
"""

from __future__ import annotations

import copy
import difflib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import yaml

if TYPE_CHECKING:
    import jsonschema

from edgeship.errors import TargetError
from edgeship.paths import state_dir

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"

# Spellings people use for the same numeric format; the profiles use the left-hand canonical names.
_FORMAT_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "int16_int8": "int16x8",
    "a16w8": "int16x8",
}


def canonical_format(name: str) -> str:
    """'FP32', 'float' and 'float32' are one format; return the canonical spelling."""
    key = str(name).strip().lower()
    return _FORMAT_ALIASES.get(key, key)


class Section(dict):
    """A read-only-by-convention dict whose keys are also attributes: profile.compute.accelerator.peak_tops.

    It stays a dict so `json.dumps`, `.get()` and `==` with plain dicts keep working.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def wrap(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [cls.wrap(v) for v in value]
        return value


class TargetProfile:
    """One validated chip profile. Top-level sections are attributes (`.compute`, `.memory`,
    `.quantization`, `.operators`, ...); `.data` is the raw merged dict.
    """

    def __init__(self, data: dict, source: Path | None = None, override: Path | None = None):
        self.data = data
        self.source = source  # the packaged (or local-only) profile file
        self.override = override  # the local override merged on top, if any
        for key, value in data.items():
            if key not in ("data", "source", "override"):
                self.__dict__[key] = Section.wrap(value)

    def __getattr__(self, key: str) -> Any:
        # Optional top-level sections (cost_model, notes) read as empty when absent.
        if key in ("cost_model", "operator_defaults"):
            return Section()
        if key == "notes":
            return []
        raise AttributeError(f"TargetProfile has no section {key!r}")

    def __repr__(self) -> str:
        return f"TargetProfile({self.name!r})"

    # identity ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return (self.data.get("metadata") or {}).get("name", "?")

    @property
    def vendor(self) -> str:
        return (self.data.get("metadata") or {}).get("vendor", "?")

    @property
    def has_host(self) -> bool:
        """False for CPU-only targets: the accelerator is the host, no partition boundary."""
        return (self.data.get("compute") or {}).get("host") is not None

    @property
    def runs_any_op(self) -> bool:
        return "*" in (self.data.get("operators") or {})

    # helpers for the quantizer, legalizer and cost model ---------------------------------------
    def peak_ops_per_s(self, fmt: str, unit: str = "accelerator") -> float | None:
        """Peak operations/s (2 per MAC) of `unit` ("accelerator" or "host") in format `fmt`.

        None when the unit does not run that format or the figure is not public. int16x8 falls back
        to int16, uint8 to int8, since profiles quote the wider-known figure.
        """
        if unit not in ("accelerator", "host"):
            raise ValueError(f"unit must be 'accelerator' or 'host', not {unit!r}")
        compute = self.data.get("compute") or {}
        compute_unit = compute.get(unit)
        if not compute_unit:
            if unit == "host" and not self.has_host:
                compute_unit = compute.get("accelerator")
            if not compute_unit:
                return None
        peaks = {canonical_format(k): v for k, v in (compute_unit.get("peak_tops") or {}).items()}
        fmt = canonical_format(fmt)
        for candidate in (fmt, {"uint8": "int8", "int16x8": "int16"}.get(fmt)):
            if candidate and peaks.get(candidate) is not None:
                return float(peaks[candidate]) * 1e12
        return None

    def supports_op(self, op_type: str, depthwise: bool = False) -> dict | None:
        """The accelerator's attribute limits for `op_type` ({} = no limits), or None if it cannot run it.

        `operator_defaults` are merged underneath (the op's own keys win). depthwise=True (a Conv with
        group == C_in) applies the op's `depthwise` overrides; without it they stay under "depthwise".
        """
        operators = self.data.get("operators") or {}
        if op_type in operators:
            own = dict(operators[op_type] or {})
        elif "*" in operators:
            own = dict(operators["*"] or {})
        else:
            return None
        limits = {**(self.data.get("operator_defaults") or {}), **own}
        if depthwise and "depthwise" in limits:
            limits.update(limits.pop("depthwise") or {})
        return limits

    def host_runs(self, op_type: str) -> bool:
        """True when a node the accelerator rejects may fall back to the host."""
        fallback = self.data.get("host_fallback") or {}
        if not fallback.get("enabled"):
            return False
        ops = fallback.get("ops", "any")
        return ops == "any" or op_type in ops

    def allows(self, dtype: str, role: str | None = None) -> bool:
        """Whether the quantizer may use `dtype` ("int8", "uint8", "int16", "fp16", ...) on this target.

        role="weights" / "activations" checks the narrower per-role list when the profile has one.
        """
        quant = self.data.get("quantization") or {}
        allowed = quant.get("dtypes") or []
        if role == "weights" and quant.get("weight_dtypes"):
            allowed = quant["weight_dtypes"]
        elif role == "activations" and quant.get("activation_dtypes"):
            allowed = quant["activation_dtypes"]
        return canonical_format(dtype) in {canonical_format(d) for d in allowed}

    def efficiency(self, op_type: str) -> float:
        """Fraction of peak compute this op type reaches (cost model calibration)."""
        table = (self.data.get("cost_model") or {}).get("efficiency") or {}
        return float(table.get(op_type, table.get("default", 0.3)))

    @property
    def per_node_overhead_us(self) -> float:
        return float((self.data.get("cost_model") or {}).get("per_node_overhead_us", 0.0))


# loading -------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def target_schema() -> dict:
    """The Target kind's JSON Schema (shipped in edgeship.pipelines/schemas)."""
    text = resources.files("edgeship.pipelines").joinpath("schemas/target.schema.json").read_text()
    return json.loads(text)


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key; lists, scalars and null in `override` replace."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = {k: copy.deepcopy(v) for k, v in base.items()}
        for key, value in override.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


MAX_PROFILE_BYTES = 1024 * 1024  # a profile is a few KB; anything near this is a mistake
MAX_PROFILE_NODES = 100_000  # nodes visited with aliases expanded: refuses "billion laughs" files


def _too_many_nodes(node: yaml.Node | None) -> bool:
    """Walk the composed graph as safe_load would expand it, stopping early past the cap."""
    seen = 0
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        seen += 1
        if seen > MAX_PROFILE_NODES:
            return True
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return False


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document safely (size and alias-expansion bounded); keep the node tree so
    errors can point at line:col."""
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise TargetError(f"{path}: larger than {MAX_PROFILE_BYTES // 1024} KB: not a target profile")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TargetError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise TargetError(f"{path}: cannot read: {err.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if _too_many_nodes(node):
            raise TargetError(f"{path}: too many YAML nodes once aliases are expanded (alias bomb?)")
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = "; ".join(p for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
        problem = problem or str(err).splitlines()[0]
        raise TargetError(f"{where}: invalid YAML: {problem}") from None
    return data, node


def _locate(node: yaml.Node | None, path: tuple) -> tuple[int, int]:
    """line, col (1-based) of the deepest node along `path` that exists."""
    best = (1, 1)
    for part in path:
        if node is None:
            break
        best = (node.start_mark.line + 1, node.start_mark.column + 1)
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    nxt = value_node
                    best = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is not None and not path:
        best = (node.start_mark.line + 1, node.start_mark.column + 1)
    return best


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<document>"


def schema_errors(data: Any) -> list[jsonschema.ValidationError]:
    import jsonschema  # here, not at import time: a device agent reads target facts without the build side

    validator = jsonschema.Draft202012Validator(target_schema())
    return sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))


def unsourced_figures(data: dict) -> list[str]:
    """Dotted paths of non-null numeric figures under compute/memory that no `sources` entry covers."""
    covered = [s["figure"] for s in data.get("sources") or [] if isinstance(s, Mapping) and "figure" in s]

    def is_covered(path: str) -> bool:
        return any(path == c or path.startswith(c + ".") or path.startswith(c + "[") for c in covered)

    missing: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if key in ("name", "kind", "note"):
                    continue
                walk(sub, f"{path}.{key}")
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not is_covered(path):
                missing.append(path)

    for section in ("compute", "memory"):
        walk(data.get(section) or {}, section)
    return missing


def _resolves(data: Any, dotted: str) -> bool:
    """Whether a `sources[].figure` path names something in the profile (catches typos in citations)."""
    node = data
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def dangling_sources(data: dict) -> list[tuple[int, str]]:
    """(index, figure) of `sources` entries whose figure path does not exist in the profile."""
    return [
        (i, s["figure"])
        for i, s in enumerate(data.get("sources") or [])
        if isinstance(s, Mapping) and isinstance(s.get("figure"), str) and not _resolves(data, s["figure"])
    ]


def validate_profile(data: Any, source: Path, node: yaml.Node | None = None, expected_name: str | None = None) -> None:
    """Schema + semantic checks; every problem in one TargetError, one `file:line:col: field: message` per line."""
    problems: list[str] = []
    for err in schema_errors(data):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
            known = list((err.schema.get("properties") or {}).keys())
            for key in [k for k in err.instance if k not in known]:
                line, col = _locate(node, path + (key,))
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
                problems.append(f"{source}:{line}:{col}: {_dotted(path + (key,))}: unknown field ({hint})")
            continue
        line, col = _locate(node, path)
        problems.append(f"{source}:{line}:{col}: {_dotted(path)}: {err.message}")
    if not problems and isinstance(data, dict):
        name = data["metadata"]["name"]
        if expected_name and name != expected_name:
            line, col = _locate(node, ("metadata", "name"))
            problems.append(f"{source}:{line}:{col}: metadata.name: {name!r} does not match the file name {expected_name!r}")
        for path in unsourced_figures(data):
            line, col = _locate(node, tuple(int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")))
            problems.append(f"{source}:{line}:{col}: {path}: figure has no `sources` entry (add one with a public URL, or set it to null with a note)")
        for i, figure in dangling_sources(data):
            line, col = _locate(node, ("sources", i, "figure"))
            problems.append(f"{source}:{line}:{col}: sources[{i}].figure: {figure!r} names no field of this profile")
        fmts = {canonical_format(f) for f in data["formats"]}
        for fmt in data["compute"]["accelerator"]["peak_tops"]:
            if canonical_format(fmt) not in fmts:
                line, col = _locate(node, ("compute", "accelerator", "peak_tops", fmt))
                problems.append(f"{source}:{line}:{col}: compute.accelerator.peak_tops.{fmt}: format not listed in `formats`")
    if problems:
        raise TargetError("\n".join(problems))


def profile_files() -> dict[str, Path]:
    """name -> packaged profile file."""
    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.yaml"))}


def override_dir() -> Path:
    return state_dir() / "targets"


def override_files() -> dict[str, Path]:
    folder = state_dir() / "targets"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def target_names() -> list[str]:
    """Every known profile name: packaged ones plus local-only complete profiles in the state dir."""
    return sorted(set(profile_files()) | set(override_files()))


def suggest(name: str, names: list[str]) -> list[str]:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if not close:  # substring hits: "orin" -> nvidia-jetson-orin-nano
        close = [n for n in names if name and name.lower() in n][:3]
    return close


def unknown_target(name: str) -> TargetError:
    names = target_names()
    close = suggest(name, names)
    hint = f"did you mean {', '.join(close)}?" if close else f"known targets: {', '.join(names)}"
    return TargetError(f"unknown target {name!r} ({hint}; `edgeship targets` lists them)")


def load_target(name: str) -> TargetProfile:
    """The named profile with its local override merged on top, validated. Raises TargetError."""
    if not isinstance(name, str) or not name:
        raise TargetError(f"target name must be a non-empty string, not {name!r}")
    packaged = profile_files().get(name)
    local = override_files().get(name)
    if packaged is None and local is None:
        raise unknown_target(name)
    if packaged is not None:
        data, node = _read_yaml(packaged)
        if not isinstance(data, dict):
            raise TargetError(f"{packaged}:1:1: <document>: a Target profile must be a mapping")
        validate_profile(data, packaged, node, expected_name=name)
        source = packaged
    else:
        data, node, source = {}, None, local
    if local is not None:
        extra, extra_node = _read_yaml(local)
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise TargetError(f"{local}:1:1: <document>: a target override must be a mapping")
        merged = deep_merge(data, extra)
        try:
            validate_profile(merged, local, extra_node, expected_name=name)
        except TargetError as err:
            raise TargetError(f"{err} (after merging the local override {local} onto {packaged or 'nothing'})") from None
        data = merged
    return TargetProfile(data, source=source, override=local)


def iter_targets() -> Iterator[TargetProfile]:
    for name in target_names():
        yield load_target(name)


def list_targets() -> list[TargetProfile]:
    """Every profile, loaded and validated (a broken one raises TargetError naming its file)."""
    return list(iter_targets())
