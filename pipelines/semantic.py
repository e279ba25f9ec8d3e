"""Checks a JSON Schema cannot express: files exist, targets exist, ids are unique, secrets are
references, a rollout's fleet loads and its selector matches something.

Every check here must survive data that already failed the schema (wrong types anywhere), so
each one looks before it leaps: a schema error is already reported, a crash here would hide it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from edgeship.pipelines.schema_check import Problem, did_you_mean, suggest
from edgeship.pipelines.selector import matches

DEFAULT_STAGES = ("import", "normalize", "optimize", "quantize", "legalize", "lower", "estimate", "validate", "package")

# Fields whose value is a secret: only a ${ENV} reference is allowed.
SECRET_VALUE_FIELDS = {"password", "token", "secret", "api_key", "passphrase"}
# Fields naming a secret file: a path, or a ${ENV} reference naming one.
SECRET_PATH_FIELDS = {"identity_file", "key", "private_key", "key_file", "password_file"}
ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
ENV_ANYWHERE = re.compile(r"\$\{[^}]*\}")


def check(doc, *, cross_refs: bool = True, local_targets: Iterable[str] = ()) -> list[Problem]:
    """All semantic problems of one document whose kind is known."""
    problems = list(_secret_problems(doc.data, ()))
    checker = {"Pipeline": _pipeline, "Fleet": _fleet, "Rollout": _rollout, "Target": _target}.get(doc.kind)
    if checker is not None and isinstance(doc.data, dict):
        problems += checker(doc, cross_refs=cross_refs, local_targets=_TargetNames(local_targets))
    return problems


# -- helpers -------------------------------------------------------------------------------------

def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _rel(doc, path: Path) -> str:
    """A path for messages: relative to the cwd when that is short, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith(os.path.join(os.pardir, os.pardir)) else rel


def _file_problem(doc, field: tuple, value: Any, *, what: str, suffix: str | None = None,
                  severity: str = "error", contained: bool = False) -> list[Problem]:
    """A referenced file must exist and be a regular file (a fifo would hang the build, a device would
    stream forever), with the right suffix; `contained` ones must also stay in the manifest's folder."""
    if not isinstance(value, str) or not value or ENV_REFERENCE.match(value):
        return []
    from edgeship.pipelines.containment import ENV as ALLOW_ENV, outside
    from edgeship.pipelines.manifest import resolve_path

    path = resolve_path(doc, value)
    where = f"paths are relative to the manifest's folder ({_rel(doc, doc.base_dir)})"
    if suffix and not value.lower().endswith(suffix):
        return [Problem(field, f"{what} must be a {suffix} file, got '{value}'", f"give a {suffix} file")]
    if contained and outside(doc.base_dir, path):
        return [Problem(field, f"{what} resolves outside the manifest's folder: {path.resolve()}",
                        f"keep it under {_rel(doc, doc.base_dir)}, or allow its folder explicitly with --allow-path DIR "
                        f"or {ALLOW_ENV} (docs/manifests.md)")]
    if not path.exists():
        return [Problem(field, f"{what} not found: {_rel(doc, path)}", where, severity)]
    if path.is_dir():
        if suffix:
            return [Problem(field, f"{what} is a directory, not a file: {_rel(doc, path)}", f"name the {suffix} file")]
        return []
    kind = _special_kind(path)
    if kind:
        return [Problem(field, f"{what} is a {kind}, not a regular file: {_rel(doc, path)}",
                        "name a regular file (symlinks are followed)")]
    return []


def _special_kind(path: Path) -> str:
    """'' for a regular file; else what it is (through symlinks)."""
    import stat

    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "fifo (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "" if stat.S_ISREG(mode) else "special file"


def _known_targets() -> list[str] | None:
    """Names from the target catalog, or None when the catalog cannot be read (check skipped)."""
    try:
        from edgeship.targets import target_names
    except ImportError:
        return None
    try:
        return list(target_names())
    except Exception:  # a broken catalog is reported by `edgeship targets`, not here
        return None


class _TargetNames:
    """The known target names, read from the catalog once per document (a fleet has many devices)."""

    def __init__(self, local: Iterable[str]):
        self.local = set(local)
        self._known: set[str] | None = None
        self._read = False

    def known(self) -> set[str] | None:
        if not self._read:
            catalog = _known_targets()
            self._known = None if catalog is None else set(catalog) | self.local
            self._read = True
        return self._known


def _target_problem(field: tuple, name: Any, targets: _TargetNames) -> list[Problem]:
    if not isinstance(name, str) or not name:
        return []
    known = targets.known()
    if known is None:
        return []
    if name in known:
        return []
    close = suggest(name, known, n=3)
    hint = ("did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else "run `edgeship targets` to list them"
    return [Problem(field, f"unknown target '{name}'", hint)]


def _secret_problems(value: Any, path: tuple) -> Iterable[Problem]:
    """${ENV} references only in secret fields, and secret values only as references."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _secret_problems(child, path + (key,))
        return
    if isinstance(value, list):
        for i, child in enumerate(value):
            yield from _secret_problems(child, path + (i,))
        return
    field = next((p for p in reversed(path) if isinstance(p, str)), "")
    if field in SECRET_VALUE_FIELDS:
        if value is None or value == "":
            return
        if not (isinstance(value, str) and ENV_REFERENCE.match(value)):
            scope = [str(p).upper() for p in path[:-1] if isinstance(p, str) and p not in ("transports", "options")]
            name = "_".join(["EDGESHIP", *scope[-1:], field.upper()])
            yield Problem(path, "secrets must not be written inline",
                          f"reference an environment variable instead, e.g. ${{{name}}}")
        return
    if field in SECRET_PATH_FIELDS:
        if isinstance(value, str) and ENV_ANYWHERE.search(value) and not ENV_REFERENCE.match(value):
            yield Problem(path, f"malformed environment reference '{value}'", "write the whole value as ${NAME}")
        return
    if isinstance(value, str) and ENV_ANYWHERE.search(value):
        yield Problem(path, "${...} environment references are only allowed in secret fields",
                      "write the value itself; references are for passwords, tokens and key files")


# -- Pipeline ------------------------------------------------------------------------------------

def _stage_names() -> list[str]:
    try:
        from edgeship.stages import registry

        names = list(registry.names())
    except Exception:  # stages not importable: the built-in list still catches typos
        names = []
    return list(DEFAULT_STAGES) + [n for n in names if n not in DEFAULT_STAGES]


def _pipeline(doc, *, cross_refs: bool, local_targets: _TargetNames) -> list[Problem]:
    data = doc.data
    out: list[Problem] = []
    model = _mapping(data.get("model"))
    if "path" in model:
        out += _file_problem(doc, ("model", "path"), model.get("path"), what="model file", suffix=".onnx", contained=True)
    out += _target_problem(("target",), data.get("target"), local_targets)

    quant = _mapping(data.get("quantization"))
    calibration = _mapping(quant.get("calibration"))
    if "data" in calibration:
        out += _file_problem(doc, ("quantization", "calibration", "data"), calibration["data"],
                             what="calibration data", suffix=".npz", contained=True)
    validation = _mapping(data.get("validation"))
    if "data" in validation:
        out += _file_problem(doc, ("validation", "data"), validation["data"], what="validation data", suffix=".npz",
                             contained=True)
    out += _input_shape_problems(doc, model, {("quantization", "calibration", "data"): calibration.get("data"),
                                               ("validation", "data"): validation.get("data")}, out)

    mode = quant.get("mode", "auto")
    if mode == "none":
        for key in ("weights", "activations", "calibration", "keep_float"):
            if key in quant:
                out.append(Problem(("quantization", key), "ignored: quantization.mode is none",
                                   "remove it, or set mode: static / dynamic / auto", "warning"))
    if mode == "dynamic":
        for key in ("activations", "calibration"):
            if key in quant:
                out.append(Problem(("quantization", key), "ignored: dynamic quantization computes activation ranges at run time",
                                   "remove it, or use mode: static / auto", "warning"))

    accuracy = _mapping(_mapping(data.get("budget")).get("accuracy"))
    if accuracy:
        metric = accuracy.get("metric", "top1_agreement")
        if metric == "max_abs_error":
            if "min" in accuracy:
                out.append(Problem(("budget", "accuracy", "min"), "max_abs_error is bounded from above", "use max: instead of min:"))
            elif "max" not in accuracy:
                out.append(Problem(("budget", "accuracy"), "missing 'max' for metric max_abs_error", "add max: 0.05 (for example)"))
        elif isinstance(metric, str):
            if "max" in accuracy:
                out.append(Problem(("budget", "accuracy", "max"), f"{metric} is bounded from below", "use min: instead of max:"))
            elif "min" not in accuracy:
                out.append(Problem(("budget", "accuracy"), f"missing 'min' for metric {metric}", "add min: 0.99 (for example)"))
            low = accuracy.get("min")
            if metric in ("top1_agreement", "cosine") and isinstance(low, (int, float)) and not isinstance(low, bool):
                lowest = 0 if metric == "top1_agreement" else -1
                if not lowest < low <= 1:
                    out.append(Problem(("budget", "accuracy", "min"), f"{metric} min must be in ({lowest}, 1], got {low}",
                                       "agreement is a fraction: 0.99 means 99%"))

    stages = data.get("stages")
    if isinstance(stages, list) and stages:
        known = _stage_names()
        for i, name in enumerate(stages):
            if isinstance(name, str) and name not in known:
                out.append(Problem(("stages", i), f"unknown stage '{name}'", did_you_mean(name, known)))
    return out


def _input_shape_problems(doc, model: dict, data_fields: dict, found: list[Problem]) -> list[Problem]:
    """Declared input shapes against the model and the data files (what normalize and the data loader
    would refuse in a build), once the files themselves are known to be there."""
    from edgeship.pipelines.manifest import resolve_path
    from edgeship.pipelines.model_inputs import input_problems

    bad_fields = {p.path for p in found if p.severity == "error"}
    path = model.get("path")
    if not isinstance(path, str) or not path.lower().endswith(".onnx") or ("model", "path") in bad_fields:
        return []
    data_files = {field: resolve_path(doc, value) for field, value in data_fields.items()
                  if isinstance(value, str) and value and field not in bad_fields}
    return input_problems(resolve_path(doc, path), model.get("inputs"), data_files)


# -- Target --------------------------------------------------------------------------------------

def _target(doc, *, cross_refs: bool, local_targets: _TargetNames) -> list[Problem]:
    """The catalog's own checks beyond its schema (every figure sourced, formats consistent)."""
    from edgeship.pipelines.schema_check import schema_problems

    if any(p.severity == "error" for p in schema_problems("Target", doc.data)):
        return []  # the catalog checks assume a schema-valid profile
    try:
        from edgeship.targets.profile import canonical_format, unsourced_figures
    except ImportError:
        return []
    out = []
    for dotted in unsourced_figures(doc.data):
        path = tuple(int(p) if p.isdigit() else p for p in dotted.replace("[", ".").replace("]", "").split("."))
        out.append(Problem(path, "figure has no `sources` entry", "add one with a public URL, or set it to null with a note"))
    formats = {canonical_format(f) for f in doc.data.get("formats") or []}
    peaks = _mapping(_mapping(_mapping(doc.data.get("compute")).get("accelerator")).get("peak_tops"))
    for fmt in peaks:
        if canonical_format(fmt) not in formats:
            out.append(Problem(("compute", "accelerator", "peak_tops", fmt), "format not listed in `formats`", f"add {fmt} to formats"))
    return out


# -- Fleet ---------------------------------------------------------------------------------------

def _fleet(doc, *, cross_refs: bool, local_targets: _TargetNames) -> list[Problem]:
    data = doc.data
    out: list[Problem] = []
    for i, key in enumerate(_mapping(data.get("trust")).get("public_keys") or []):
        out += _file_problem(doc, ("trust", "public_keys", i), key, what="public key")

    transports = _mapping(data.get("transports"))
    ssh = _mapping(transports.get("ssh"))
    if isinstance(ssh.get("known_hosts"), str):
        out += _file_problem(doc, ("transports", "ssh", "known_hosts"), ssh["known_hosts"], what="known_hosts file",
                             severity="warning")
    if isinstance(ssh.get("identity_file"), str):
        out += _file_problem(doc, ("transports", "ssh", "identity_file"), ssh["identity_file"], what="identity file",
                             severity="warning")
    tls = _mapping(_mapping(transports.get("mqtt")).get("tls"))
    for key in ("ca",):
        if key in tls:
            out += _file_problem(doc, ("transports", "mqtt", "tls", key), tls[key], what=f"TLS {key} file")

    out += _state_problems(doc, data.get("state"))

    devices = data.get("devices")
    first_seen: dict[str, int] = {}
    for i, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        dev_id = device.get("id")
        if isinstance(dev_id, str):
            if dev_id in first_seen:
                line, _ = doc.where(("devices", first_seen[dev_id], "id"))
                out.append(Problem(("devices", i, "id"), f"duplicate device id '{dev_id}'",
                                   f"first used at line {line}; ids must be unique"))
            else:
                first_seen[dev_id] = i
        out += _target_problem(("devices", i, "target"), device.get("target"), local_targets)
        transport = device.get("transport", "local")
        address = device.get("address")
        if transport == "local" and not address:
            out.append(Problem(("devices", i), f"device '{dev_id}' uses the local transport but has no address",
                               "add address: a directory for the device root (relative to this manifest)"))
        if transport == "ssh":
            if not address:
                out.append(Problem(("devices", i), f"device '{dev_id}' uses ssh but has no address", "add address: host[:port]"))
            elif isinstance(address, str) and not _valid_host_port(address):
                out.append(Problem(("devices", i, "address"), f"invalid ssh address '{address}'", "write host or host:port (port 1-65535)"))
        if transport == "mqtt" and not _mapping(transports.get("mqtt")).get("broker"):
            out.append(Problem(("devices", i, "transport"), f"device '{dev_id}' uses mqtt but transports.mqtt.broker is not set",
                               'add transports: {mqtt: {broker: "mqtt://host:1883"}}'))
        if transport == "mqtt" and address:
            out.append(Problem(("devices", i, "address"), "ignored for mqtt devices (the device id is the address)",
                               "remove it", "warning"))
    return out


def _state_problems(doc, state: Any) -> list[Problem]:
    """`state:` names one store, and a PostgreSQL password never sits in the manifest (the URL is
    shown, logged and committed to git): it comes from password_file, url_env or libpq's own means."""
    if not isinstance(state, dict):
        return []
    given = [k for k in ("url", "url_env", "sqlite") if k in state]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        return [Problem(("state",), f"give exactly one of url, url_env, sqlite (got: {got})",
                        "url: postgresql://USER@HOST/DB, url_env: NAME of a variable holding it, or sqlite: FILE")]
    out: list[Problem] = []
    if "sqlite" in state and "password_file" in state:
        out.append(Problem(("state", "password_file"), "a SQLite state file has no password", "remove password_file"))
    url = state.get("url")
    if isinstance(url, str):
        from edgeship.fleet.state import url_has_password

        if url_has_password(url):
            out.append(Problem(("state", "url"), "the database password must not be written in the manifest",
                               "remove it from the URL and use password_file: FILE, url_env: NAME (a variable "
                               "holding the whole URL), or libpq's PGPASSWORD / ~/.pgpass"))
    if isinstance(state.get("password_file"), str):
        out += _file_problem(doc, ("state", "password_file"), state["password_file"], what="database password file")
    return out


def _valid_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    if not host or any(c.isspace() for c in host) or "/" in host:
        return False
    if sep:
        return port.isdigit() and 1 <= int(port) <= 65535
    return True


# -- Rollout -------------------------------------------------------------------------------------

def _rollout(doc, *, cross_refs: bool, local_targets: _TargetNames) -> list[Problem]:
    data = doc.data
    out: list[Problem] = []
    artifact = data.get("artifact")
    if isinstance(artifact, dict):
        given = [k for k in ("path", "digest", "pipeline") if k in artifact]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            out.append(Problem(("artifact",), f"give exactly one of path, digest, pipeline (got: {got})",
                               "path: a built artifact; digest: one in the store; pipeline: build it first"))
        if "path" in artifact:
            out += _file_problem(doc, ("artifact", "path"), artifact["path"], what="artifact", severity="warning")
        if "pipeline" in artifact:
            missing = _file_problem(doc, ("artifact", "pipeline"), artifact["pipeline"], what="pipeline manifest")
            out += missing
            if cross_refs and not missing and isinstance(artifact["pipeline"], str):
                out += _referenced(doc, ("artifact", "pipeline"), artifact["pipeline"], "Pipeline")[1]

    strategy = _mapping(data.get("strategy"))
    canary = _mapping(strategy.get("canary"))
    if "count" in canary and "percent" in canary:
        out.append(Problem(("strategy", "canary"), "give count or percent, not both", "e.g. canary: {count: 1}"))
    waves = strategy.get("waves")
    if isinstance(waves, list) and waves and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in waves):
        for i in range(1, len(waves)):
            if waves[i] <= waves[i - 1]:
                out.append(Problem(("strategy", "waves", i), f"waves must increase: {waves[i]} after {waves[i - 1]}",
                                   "waves are cumulative percentages, e.g. [10, 50, 100]"))
                break
        if waves[-1] != 100:
            out.append(Problem(("strategy", "waves", len(waves) - 1), f"the last wave must be 100, got {waves[-1]}",
                               "waves are cumulative percents of the selected devices: end at 100"))

    selector = _mapping(data.get("selector"))
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        if not isinstance(expr, dict):
            continue
        op, values = expr.get("operator"), expr.get("values")
        if op in ("In", "NotIn") and not values:
            out.append(Problem(("selector", "matchExpressions", i), f"operator {op} needs a non-empty values list", "add values: [...]"))
        if op in ("Exists", "DoesNotExist") and values:
            out.append(Problem(("selector", "matchExpressions", i, "values"), f"operator {op} takes no values", "remove values"))

    fleet_ref = data.get("fleet")
    if isinstance(fleet_ref, str) and fleet_ref:
        missing = _file_problem(doc, ("fleet",), fleet_ref, what="fleet file")
        out += missing
        if not missing and cross_refs:
            fleets, problems = _referenced(doc, ("fleet",), fleet_ref, "Fleet")
            out += problems
            if len(fleets) > 1:
                out.append(Problem(("fleet",), f"fleet file holds {len(fleets)} Fleet documents", "keep one Fleet per file"))
            elif len(fleets) == 1 and not any(p.severity == "error" for p in out if p.path[:1] == ("selector",)):
                out += _selector_matches(fleets[0], selector)
    return out


def _referenced(doc, field: tuple, ref: str, kind: str):
    """Load a manifest this one points to; its errors become one problem here (details: validate it)."""
    from edgeship.pipelines.manifest import check_file, resolve_path

    path = resolve_path(doc, ref)
    docs, diagnostics = check_file(path, kinds=(kind,), cross_refs=False)
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        first = errors[0]
        return [], [Problem(field, f"{kind.lower()} manifest has {len(errors)} error(s), first: "
                                   f"line {first.line}: {first.path or '<document>'}: {first.message}",
                            f"run `edgeship validate {_rel(doc, path)}`")]
    return docs, []


def _selector_matches(fleet_doc, selector: dict) -> list[Problem]:
    devices = [d for d in fleet_doc.data.get("devices") or [] if isinstance(d, dict)]
    if any(matches(selector, _mapping(d.get("labels"))) for d in devices):
        return []
    labels = sorted({f"{k}={v}" for d in devices for k, v in _mapping(d.get("labels")).items()})
    shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
    name = fleet_doc.name or "the fleet"
    return [Problem(("selector",), f"matches no device in fleet '{name}' ({len(devices)} devices)",
                    f"labels in the fleet: {shown}" if labels else "the fleet's devices have no labels", "warning")]
