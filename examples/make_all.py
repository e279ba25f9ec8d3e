#!/usr/bin/env python3
"""Make every example model and its data (deterministic, no downloads): kws, llm, fraud, v1 and v2.

    python examples/make_all.py            # into examples/<name>/models and examples/<name>/data
    python examples/make_all.py --out DIR  # into DIR/<name>/...
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = ("kws", "llm", "fraud")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"edgeship_example_{name}", HERE / name / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="root folder (default: the examples folder itself)")
    args = parser.parse_args(argv)
    for name in EXAMPLES:
        out = (args.out / name) if args.out else HERE / name
        module = load(name)
        for variant in ("v1", "v2"):
            code = module.main(["--out", str(out), "--variant", variant])
            if code:
                return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
