"""Install size: the device install `edgeship[agent]` next to the full tool `edgeship[full]`.

Each goes into a fresh virtualenv (from one wheel of this checkout, dependencies from the configured
package index or its cache), then: site-packages size without pip/setuptools (what the install
adds), the distributions it brought, the largest five, and a check that the device install really
is the agent (`edgeship agent selftest` passes, onnx/fabric/jsonschema are absent).
Run:  python bench/install_size.py [--keep DIR]     (a minute or two with a warm pip cache)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"pip", "setuptools", "wheel", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}
CHECK = r"""
import importlib.util as u, json
print(json.dumps({m: bool(u.find_spec(m)) for m in ("onnx", "fabric", "paramiko", "jsonschema", "onnxruntime")}))
"""


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def measure(name: str, wheel: Path, extra: str, workdir: Path) -> dict:
    venv = workdir / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    started = time.perf_counter()
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[{extra}]"], check=True)
    seconds = time.perf_counter() - started
    site = _site_packages(venv)
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        key = entry.name.split("-")[0].lower() if entry.name.endswith((".dist-info", ".data")) else entry.name
        if key.split(".")[0] in BASE or entry.name.startswith(("pip", "setuptools", "_distutils")):
            continue
        sizes[entry.name] = _tree_bytes(entry) if entry.is_dir() else entry.stat().st_size
    dists = sorted(p.name.split("-")[0] for p in site.glob("*.dist-info") if p.name.split("-")[0].lower() not in BASE)
    present = json.loads(subprocess.run([py, "-c", CHECK], capture_output=True, text=True, check=True).stdout)
    selftest = subprocess.run([py, "-m", "edgeship", "agent", "selftest", "--root", str(workdir / f"{name}-root")],
                              capture_output=True, text=True)
    return {"name": name, "extra": extra, "bytes": sum(sizes.values()), "dists": dists, "install_s": seconds,
            "largest": sorted(sizes.items(), key=lambda kv: -kv[1])[:5], "present": present,
            "selftest": selftest.returncode == 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="build the venvs here and keep them (default: a temp folder, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(work / "dist"), str(ROOT)], check=True)
        wheel = next((work / "dist").glob("edgeship-*.whl"))
        rows = [measure("agent", wheel, "agent", work), measure("full", wheel, "full", work)]
    print(f"{'install':<18} {'site-packages':>14} {'dists':>6} {'pip install':>12}  selftest  build side present")
    for r in rows:
        heavy = [m for m in ("onnx", "fabric", "paramiko", "jsonschema") if r["present"][m]]
        print(f"edgeship[{r['extra']}]".ljust(18), f"{r['bytes'] / 2**20:>11.1f} MB", f"{len(r['dists']):>6}",
              f"{r['install_s']:>10.1f} s", f"  {'ok' if r['selftest'] else 'FAILED':<8}", " ", ", ".join(heavy) or "none")
    agent, full = rows
    print(f"\nthe device install is {agent['bytes'] / full['bytes']:.0%} of the full one "
          f"({(full['bytes'] - agent['bytes']) / 2**20:.1f} MB less)")
    for r in rows:
        print(f"largest in edgeship[{r['extra']}]: " + ", ".join(f"{n} {b / 2**20:.1f} MB" for n, b in r["largest"]))
        print(f"  dists: {' '.join(r['dists'])}")
    ok = agent["selftest"] and not any(agent["present"][m] for m in ("onnx", "fabric", "paramiko", "jsonschema"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
