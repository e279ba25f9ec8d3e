"""`edgeship validate FILE...` and `edgeship schema KIND`: the manifest language on the command line.

validate prints every problem of every file, one `file:line:col: field: message (hint)` per line,
and exits 2 on any error (0 when clean; warnings print but do not fail unless --strict).
schema prints a kind's JSON Schema so editors with a YAML language server validate while typing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from edgeship.errors import UsageError


def register(subparsers) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="check manifests (every error in every file, one per line)",
        description="Check manifests against the schemas and semantic rules. Prints one line per problem "
                    "(file:line:col: field: message (hint)); exit 0 when clean, 2 on any error.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="manifest files (YAML, several documents per file allowed)")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 2)")
    validate.add_argument("--format", choices=("text", "json"), default="text",
                          help="text: one line per problem on stderr; json: a list of problems on stdout")
    validate.add_argument("-o", "--output", dest="output_format", choices=("text", "json"), default="text",
                          metavar="FORMAT", help="text, or json: a versioned ValidationReport document on stdout "
                                                 "(the same problems as --format json)")
    validate.add_argument("-q", "--quiet", action="store_true", help="print problems only, no per-file 'ok' lines")
    validate.add_argument("--allow-path", action="append", metavar="DIR",
                          help="also allow model and data files under DIR (repeatable; by default only the "
                               "manifest's own folder; EDGESHIP_ALLOW_PATHS does the same)")
    validate.set_defaults(func=run_validate)

    schema = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of a manifest kind",
        description="Print the JSON Schema (draft 2020-12) of a manifest kind, for editors and CI.",
    )
    schema.add_argument("kind", nargs="?", metavar="KIND", help="Pipeline, Target, Fleet or Rollout (any case)")
    schema.add_argument("--list", action="store_true", help="list the kinds")
    schema.set_defaults(func=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    from edgeship.pipelines.containment import allowing
    from edgeship.pipelines.manifest import check_file, duplicate_pipeline_names

    with allowing(args.allow_path or []):
        checked = [(path, *check_file(path)) for path in args.files]
    for diag in duplicate_pipeline_names(doc for _, documents, _ in checked for doc in documents):
        next(diagnostics for path, _, diagnostics in checked if path == diag.file).append(diag)
    if args.output_format == "json" and args.format == "text":
        args.format = "versioned"  # -o json: the problems of --format json, in a versioned document
    all_diagnostics = []
    for path, documents, diagnostics in checked:
        all_diagnostics += diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        if args.format == "text":
            for diag in sorted(diagnostics, key=lambda d: (d.line, d.col)):
                print(diag, file=sys.stderr)
            if not errors and not args.quiet:
                names = ", ".join(f"{d.kind} {d.name}" for d in documents)
                print(f"{path}: ok ({names})")
    errors = sum(d.severity == "error" for d in all_diagnostics)
    warnings = len(all_diagnostics) - errors
    problems = [{"file": d.file, "line": d.line, "col": d.col, "path": d.path, "message": d.message,
                 "hint": d.hint, "severity": d.severity} for d in all_diagnostics]
    if args.format == "json":
        json.dump(problems, sys.stdout, indent=2)
        print()
    elif args.format == "versioned":
        from edgeship.output import print_document

        print_document("ValidationReport", files=[str(f) for f in args.files], ok=not errors and not (args.strict and warnings),
                       errors=errors, warnings=warnings, problems=problems)
    elif errors or warnings:
        print(f"{errors} error(s), {warnings} warning(s) in {len(args.files)} file(s)", file=sys.stderr)
    if errors or (args.strict and warnings):
        return 2
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from edgeship.pipelines.manifest import KINDS, load_schema
    from edgeship.pipelines.schema_check import did_you_mean

    if args.list or not args.kind:
        if not args.list:
            raise UsageError(f"name a kind: edgeship schema KIND (one of: {', '.join(KINDS)})")
        print("\n".join(KINDS))
        return 0
    by_lower = {k.lower(): k for k in KINDS}
    kind = by_lower.get(args.kind.lower())
    if kind is None:
        raise UsageError(f"unknown kind {args.kind!r} ({did_you_mean(args.kind, KINDS)})")
    try:
        json.dump(load_schema(kind), sys.stdout, indent=2)
        print()
        sys.stdout.flush()
    except BrokenPipeError:  # `edgeship schema fleet | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
