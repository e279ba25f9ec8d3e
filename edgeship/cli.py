"""The `edgeship` command. Subcommands live in `edgeship.commands.*`, each module exposing
`register(subparsers)`; this file only discovers them and turns typed errors into exit codes,
so areas (build, fleet, rollouts) add commands without touching one shared file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from edgeship import __version__
from edgeship.errors import EdgeshipError, ManifestError

# Top-level modules of the `full` extra: a device install (`edgeship[agent]`) lacks them on purpose.
FULL_ONLY = {"onnx", "jsonschema", "fabric", "paramiko", "invoke"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeship",
        description="Compile ONNX models for edge inference chips and roll them out to device fleets.",
    )
    parser.add_argument("--version", action="version", version=f"edgeship {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import edgeship.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"edgeship.commands.{info.name}")
        module.register(sub)
    return parser


def _missing_extra(err: Exception) -> str:
    """For a module of an extra that this install lacks: what it is and the pip line that adds it."""
    top = (getattr(err, "name", None) or "").split(".")[0] if isinstance(err, ModuleNotFoundError) else ""
    if top == "onnxruntime":
        return "the ONNX runtime (onnxruntime is not installed): pip install 'edgeship[agent]'"
    if top in FULL_ONLY:
        return f"the full install ({top} is not installed; a device install carries only the agent): pip install 'edgeship[full]'"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a completion script asks for candidates (`edgeship completion`)
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ManifestError as err:
        for diag in err.warnings:
            print(diag, file=sys.stderr)
        for diag in err.diagnostics:
            print(diag, file=sys.stderr)
        return err.exit_code
    except EdgeshipError as err:
        print(f"edgeship: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("edgeship: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug in edgeship: one line unless debugging
        missing = _missing_extra(err)
        if missing:
            print(f"edgeship: error: `edgeship {args.command}` needs {missing}", file=sys.stderr)
            return 2
        if os.environ.get("EDGESHIP_DEBUG"):
            raise
        print(f"edgeship: internal error: {type(err).__name__}: {err} (set EDGESHIP_DEBUG=1 for a traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
