"""`edgeship targets`: the chip catalog as a table, or one profile in full.

Kept here (not in edgeship.targets) so the library stays free of printing; this module only formats.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from edgeship.errors import TargetError
from edgeship.output import add_output_option, print_document, wants

if TYPE_CHECKING:  # the catalog (jsonschema) loads when a targets command runs, not with every command
    from edgeship.targets import TargetProfile

COLUMNS = ("NAME", "VENDOR", "ACCELERATOR", "PEAK INT8 TOPS", "MEMORY", "FORMATS", "RUNTIME", "MEASURABLE")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "targets",
        help="list the chip target catalog, or show one profile",
        description="List the chip profiles edgeship can build for (with any local override merged), or print one.",
    )
    parser.add_argument("--json", action="store_true", help="the legacy JSON list (prefer -o json)")
    add_output_option(parser)
    sub = parser.add_subparsers(dest="targets_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="print one profile (YAML, local override merged)",
                          description="Print one chip profile as YAML, with any local override merged.")
    show.add_argument("name", help="profile name, e.g. host-cpu")
    show.add_argument("--json", action="store_true", help="the profile as plain JSON (prefer -o json)")
    add_output_option(show)
    show.set_defaults(func=run_show)
    ls = sub.add_parser("list", help="the table (same as `edgeship targets`)")
    ls.add_argument("--json", action="store_true", help="the legacy JSON list (prefer -o json)")
    add_output_option(ls)
    ls.set_defaults(func=run_list)
    parser.set_defaults(func=run_list)


def _number(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}"


def _size_kb(kb: float) -> str:
    for unit, scale in (("GB", 1024 * 1024), ("MB", 1024)):
        if kb >= scale:
            return f"{kb / scale:g} {unit}"
    return f"{kb:g} KB"


def _memory(profile: TargetProfile) -> str:
    """On-chip SRAM / external memory, the two figures that decide whether a model fits."""
    mem = profile.memory
    parts = []
    if mem.get("sram_kb") is not None:
        parts.append(_size_kb(mem["sram_kb"]) + " SRAM")
    if mem.get("dram_mb") is not None:
        parts.append(_size_kb(mem["dram_mb"] * 1024) + " DRAM")
    return ", ".join(parts) or "n/a"


def _peak_8bit(profile: TargetProfile) -> tuple[float | None, str | None]:
    """Peak int8 TOPS; for chips without plain int8, their 8-bit format (e.g. mxint8), named."""
    peak = profile.peak_ops_per_s("int8")
    if peak is not None:
        return peak / 1e12, None
    for fmt in ("mxint8", "fp8", "mxfp8"):
        peak = profile.peak_ops_per_s(fmt)
        if peak is not None:
            return peak / 1e12, fmt
    return None, None


def _runtime(profile: TargetProfile) -> str:
    rt = profile.runtime
    backend = profile.data.get("backend") or {}
    if backend.get("name") == "tflite":  # integer .tflite on LiteRT; ONNX on onnxruntime where the emitter cannot
        fallback = (backend.get("options") or {}).get("fallback")
        return "litert" + (f" (else {fallback})" if fallback else "")
    if rt["kind"] == "onnxruntime":
        return f"ort:{rt['execution_provider']}"
    return rt.get("execution_provider") and f"ort:{rt['execution_provider']}" or (rt.get("toolchain") or "vendor").split(" (")[0]


def row(profile: TargetProfile) -> dict:
    """One table row; also the --json record."""
    peak, peak_format = _peak_8bit(profile)
    return {
        "name": profile.name,
        "vendor": profile.vendor,
        "accelerator": profile.compute.accelerator["name"],
        "peak_int8_tops": None if peak is None else round(peak, 6),
        "peak_format": peak_format or ("int8" if peak is not None else None),
        "memory": _memory(profile),
        "formats": list(profile.formats),
        "runtime": _runtime(profile),
        "measurable": bool(profile.measurable),
        "override": str(profile.override) if profile.override else None,
    }


def format_table(rows: list[dict]) -> str:
    cells = [COLUMNS] + [
        (
            r["name"] + (" *" if r["override"] else ""),
            r["vendor"],
            r["accelerator"],
            _number(r["peak_int8_tops"]) + (f" ({r['peak_format']})" if r["peak_format"] not in (None, "int8") else ""),
            r["memory"],
            ",".join(r["formats"]),
            r["runtime"],
            "yes" if r["measurable"] else "no",
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(COLUMNS))]
    numeric = {COLUMNS.index("PEAK INT8 TOPS")}
    lines = []
    for c in cells:
        lines.append("  ".join(str(v).rjust(w) if i in numeric else str(v).ljust(w) for i, (v, w) in enumerate(zip(c, widths))).rstrip())
    if any(r["override"] for r in rows):
        lines.append("* local override merged (edgeship calibrate / state dir targets/)")
    return "\n".join(lines)


def _quiet_broken_pipe(func):
    """`edgeship targets | head` must not end in an error: stop writing quietly."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            code = func(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    wrapper.__doc__ = func.__doc__
    return wrapper


@_quiet_broken_pipe
def run_list(args: argparse.Namespace) -> int:
    """The table; a broken profile or override is reported on stderr without hiding the others."""
    from edgeship.targets import load_target, target_names

    profiles, broken = [], []
    for name in target_names():
        try:
            profiles.append(load_target(name))
        except TargetError as err:
            broken.append(err)
    rows = [row(p) for p in profiles]
    if getattr(args, "json", False):
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif wants(args, "json"):
        print_document("TargetList", targets=rows, errors=[str(e) for e in broken])
    else:
        print(format_table(rows))
    for err in broken:
        print(f"edgeship: error: {err}", file=sys.stderr)
    return TargetError.exit_code if broken else 0


@_quiet_broken_pipe
def run_show(args: argparse.Namespace) -> int:
    import yaml

    from edgeship.targets import load_target

    profile = load_target(args.name)
    if wants(args, "json"):
        print_document("TargetProfile", name=profile.name, source=str(profile.source) if profile.source else None,
                       override=str(profile.override) if profile.override else None, profile=profile.data)
        return 0
    if args.json:
        json.dump(profile.data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if profile.override is None and profile.source is not None:
        # Unmerged: print the file itself, so its comments (how figures were derived) come along.
        sys.stdout.write(f"# {profile.name}: {profile.source}\n")
        sys.stdout.write(profile.source.read_text(encoding="utf-8"))
        return 0
    print(f"# {profile.name}: {profile.source}\n# local override merged: {profile.override}")
    sys.stdout.write(yaml.safe_dump(profile.data, sort_keys=False, allow_unicode=True, width=110))
    return 0
