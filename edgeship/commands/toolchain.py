"""`edgeship toolchain ls | install NAME | doctor [NAME] | remove NAME`: vendor SDK environments.

Formatting only; the environments themselves are managed by edgeship.targets.toolchains.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from edgeship.errors import EdgeshipError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "toolchain", help="manage vendor toolchain environments (RKNN, ...)",
        description="Vendor SDKs that pin old dependencies run in their own virtualenvs, created by edgeship under "
                    "the state folder ($EDGESHIP_TOOLCHAIN_CACHE overrides) and keyed by their requirement set.")
    sub = parser.add_subparsers(dest="toolchain_command", metavar="SUBCOMMAND")
    ls = sub.add_parser("ls", help="list toolchains and whether they are installed")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_ls)
    install = sub.add_parser("install", help="create a toolchain's environment (shows pip's progress)")
    install.add_argument("name")
    install.add_argument("--force", action="store_true", help="rebuild even if it is installed")
    install.add_argument("--quiet", action="store_true", help="only the final line")
    install.set_defaults(func=run_install)
    doctor = sub.add_parser("doctor", help="check interpreters, environments and that each SDK imports")
    doctor.add_argument("name", nargs="?", help="one toolchain (default: all)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=run_doctor)
    remove = sub.add_parser("remove", help="delete a toolchain's environment (and stale ones of the same toolchain)")
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)
    parser.set_defaults(func=run_ls, json=False)


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:,.0f} MB"


def status(toolchain) -> dict:
    from edgeship.targets.toolchains.env import ToolchainEnv

    env = ToolchainEnv(toolchain)
    record = env.record() if env.installed else {}
    return {"name": toolchain.name, "python": toolchain.python, "installed": env.installed, "path": str(env.path),
            "size_bytes": record.get("size_bytes"), "install_seconds": record.get("install_seconds"),
            "requirements": list(toolchain.requirements) + [f"{r} (--no-deps)" for r in toolchain.no_deps],
            "stale": [str(p) for p in env.stale()], "description": toolchain.description}


def run_ls(args) -> int:
    from edgeship.commands.compile import _table
    from edgeship.targets.toolchains.registry import toolchains

    rows = [status(t) for t in toolchains().values()]
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    table = [("name", "python", "installed", "size", "requirements")]
    for r in rows:
        table.append((r["name"], r["python"], "yes" if r["installed"] else "no", _mb(r["size_bytes"]),
                      ", ".join(r["requirements"])))
    print(_table(table))
    for r in rows:
        print(f"{r['name']}: {r['path']}" + ("" if r["installed"] else f"  (install: edgeship toolchain install {r['name']})"))
    return 0


def run_install(args) -> int:
    from edgeship.targets.toolchains.env import ToolchainEnv
    from edgeship.targets.toolchains.registry import get_toolchain

    toolchain = get_toolchain(args.name)
    env = ToolchainEnv(toolchain)
    if env.installed and not args.force:
        record = env.record()
        print(f"{toolchain.name}: already installed at {env.path} ({_mb(record.get('size_bytes'))})")
        return 0
    started = time.monotonic()

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    record = env.install(progress=progress, force=args.force)
    print(f"{toolchain.name}: installed at {env.path} in {record['install_seconds']} s, {_mb(record['size_bytes'])}")
    return 0


def probe(toolchain) -> dict:
    """Run the worker's `probe` action in the environment: the SDK imports and says its versions."""
    from edgeship.targets.toolchains import contract
    from edgeship.targets.toolchains.runner import run_worker

    with tempfile.TemporaryDirectory(prefix=f"edgeship-doctor-{toolchain.name}-") as tmp:
        request = contract.request(toolchain.name, "probe", tmp)
        response = run_worker(toolchain, request, Path(tmp), timeout=300)
    return response.get("versions") or {}


def run_doctor(args) -> int:
    from edgeship.targets.toolchains.interpreter import find_python
    from edgeship.targets.toolchains.registry import get_toolchain, toolchains

    chosen = [get_toolchain(args.name)] if args.name else list(toolchains().values())
    results, failed = [], 0
    for toolchain in chosen:
        row = status(toolchain)
        try:
            python, version = find_python(toolchain)
            row["interpreter"] = f"{python} ({version[0]}.{version[1]})"
        except EdgeshipError as err:
            row["interpreter"] = None
            row["problem"] = str(err)
        if row["installed"]:
            try:
                row["versions"] = probe(toolchain)
                row["ok"] = True
            except EdgeshipError as err:
                row["ok"] = False
                row["problem"] = str(err)
        else:
            row["ok"] = None
        failed += row["ok"] is False
        results.append(row)
    if args.json:
        print(json.dumps(results, indent=2))
        return 1 if failed else 0
    for row in results:
        if row["ok"] is True:
            versions = ", ".join(f"{k} {v}" for k, v in row["versions"].items())
            print(f"{row['name']}: ok ({versions})")
        elif row["ok"] is False:
            print(f"{row['name']}: BROKEN: {row['problem']} (rebuild: edgeship toolchain install {row['name']} --force)")
        else:
            print(f"{row['name']}: not installed (edgeship toolchain install {row['name']})")
        print(f"  interpreter: {row['interpreter'] or row.get('problem')}")
        print(f"  environment: {row['path']}" + (f", {_mb(row['size_bytes'])}" if row["size_bytes"] else ""))
        for path in row["stale"]:
            print(f"  stale environment (older requirement set): {path} (edgeship toolchain remove {row['name']})")
    return 1 if failed else 0


def run_remove(args) -> int:
    from edgeship.targets.toolchains.env import ToolchainEnv
    from edgeship.targets.toolchains.registry import get_toolchain

    gone = ToolchainEnv(get_toolchain(args.name)).remove()
    if not gone:
        print(f"{args.name}: nothing to remove")
    for path in gone:
        print(f"removed {path}")
    return 0
