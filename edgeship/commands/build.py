"""`edgeship build`, `edgeship cache ls|prune`, `edgeship keys generate`, `edgeship verify`.

build: load every manifest first (all manifest errors at once, exit 2), make sure a signing key
exists, then build each Pipeline (in parallel processes with -j N), print a summary table per build,
copy each artifact to OUT/<name>/ and OUT/<name>.tar and print its digest. Exit 0 when every build
succeeded, 1 when a stage failed or a budget was exceeded (with the table of what and by how much).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from edgeship.errors import ArtifactError, UsageError


# --- build ------------------------------------------------------------------------------------------

def _load_pipelines(paths: list[str]):
    from edgeship.api import load_pipelines

    return load_pipelines(paths)


def _budget_table(rows) -> str:
    table = [("metric", "budget", "measured", "by")] + [(r["metric"], r["budget"], r["measured"], r["by"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _build_one(source: str, index: int, target: str | None, use_cache: bool, prefix: bool, quiet: bool,
               ndjson: bool = False):
    """Build one document (runs in a worker process with -j N); returns an api BuildOutcome. With
    `ndjson`, its events go to stdout as JSON lines (a worker's stdout is the command's)."""
    from edgeship.api import build_document
    from edgeship.output import NdjsonWriter
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress

    docs = [d for d in load_documents(source, kinds=["Pipeline"]) if d.index == index]
    doc = docs[0]
    progress = Progress(prefix=f"{doc.name}: " if prefix else "", quiet=quiet, on_event=NdjsonWriter() if ndjson else None)
    outcome = build_document(doc, target=target, use_cache=use_cache, progress=progress)
    outcome._exception = None  # typed errors do not survive pickling with their fields: the outcome holds their facts
    return outcome


def cmd_build(args: argparse.Namespace) -> int:
    """--key and --allow-path stand for EDGESHIP_SIGNING_KEY and EDGESHIP_ALLOW_PATHS: set for the build
    (the package stage and spawned -j workers read them), restored afterwards."""
    from edgeship.pipelines.containment import allowing

    if args.jobs < 1:
        raise UsageError("-j must be at least 1")
    if args.key and not Path(args.key).is_file():
        raise UsageError(f"--key {args.key}: no such private key file (create one with `edgeship keys generate --out PATH`)")
    before = os.environ.get("EDGESHIP_SIGNING_KEY")
    if args.key:
        os.environ["EDGESHIP_SIGNING_KEY"] = os.path.abspath(args.key)
    try:
        with allowing(args.allow_path or []):
            return _build_all(args)
    finally:
        if before is None:
            os.environ.pop("EDGESHIP_SIGNING_KEY", None)
        else:
            os.environ["EDGESHIP_SIGNING_KEY"] = before


def _build_all(args: argparse.Namespace) -> int:
    from edgeship.stages.package import ensure_signing_key

    docs = _load_pipelines(args.pipelines)
    if not docs:
        raise UsageError("no Pipeline documents in the given files")
    for doc in docs:
        for warning in getattr(doc, "warnings", []) or []:
            print(warning, file=sys.stderr)
    ensure_signing_key()  # once, before any worker: parallel builds must not race to create it
    from edgeship.output import print_document, wants

    ndjson = wants(args, "ndjson")
    quiet = args.quiet or not wants(args, "text")
    jobs = [(str(getattr(d, "display", "") or d.source), d.index, args.target, not args.no_cache, len(docs) > 1,
             args.quiet, ndjson) for d in docs]
    t0 = time.perf_counter()
    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(_build_one, *zip(*jobs)))
    else:
        outcomes = [_build_one(*job) for job in jobs]
    out_dir = Path(args.output)
    code = 0
    from edgeship.api import export

    for outcome in outcomes:
        if not quiet:
            if len(outcomes) > 1:
                print(f"\n{outcome.pipeline}:")
            print(outcome.summary)
        for warning in outcome.warnings:
            print(f"edgeship: warning: {outcome.pipeline}: {warning}", file=sys.stderr)
        if outcome.ok:
            export(outcome, out_dir)
            if wants(args, "text"):
                print(f"built {outcome.pipeline}: {outcome.digest}  -> {outcome.exported_dir}/ and {outcome.exported_tar}")
                if outcome.key_id:
                    print(f"  signed with key {outcome.key_id}: {_key_origin(args)}")
            continue
        code = max(code, outcome.exit_code)
        if outcome.budget:
            print(f"{outcome.pipeline}: budget exceeded:", file=sys.stderr)
            print(_budget_table(outcome.budget), file=sys.stderr)
        for line in outcome.diagnostics:
            print(line, file=sys.stderr)
        if not outcome.diagnostics:
            print(f"edgeship: error: {outcome.pipeline}: {outcome.error}", file=sys.stderr)
    if wants(args, "json") or ndjson:
        payload = {"builds": outcomes, "ok": all(o.ok for o in outcomes)}
        if ndjson:
            from edgeship.output import NdjsonWriter

            NdjsonWriter().document("BuildResult", **payload)
        else:
            print_document("BuildResult", **payload)
    if len(outcomes) > 1 and not quiet:
        ok = sum(1 for o in outcomes if o["ok"])
        print(f"\n{ok}/{len(outcomes)} pipelines built in {time.perf_counter() - t0:.2f} s")
    return code


def _key_origin(args: argparse.Namespace) -> str:
    """Which private key signed, and why that one: devices trust only the matching .pub."""
    from edgeship.paths import default_signing_key

    key = default_signing_key()
    if args.key:
        why = "from --key"
    elif os.environ.get("EDGESHIP_SIGNING_KEY"):
        why = "from EDGESHIP_SIGNING_KEY"
    else:
        why = "the default key in the state folder; choose one with --key or EDGESHIP_SIGNING_KEY"
    return f"{key} ({why}); devices must trust {key.with_suffix('.pub')}"


# --- cache ------------------------------------------------------------------------------------------

def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_cache_ls(args: argparse.Namespace) -> int:
    from edgeship.pipelines.cache import StageCache

    entries = StageCache().entries()
    if not entries:
        print("the build cache is empty")
        return 0
    rows = [("key", "stage", "size", "last used")]
    for e in entries:
        rows.append((e.key[:16], e.stage, _size(e.size), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"{len(entries)} entries, {_size(sum(e.size for e in entries))}")
    return 0


def cmd_cache_prune(args: argparse.Namespace) -> int:
    from edgeship.pipelines.cache import StageCache

    if args.older_than is not None and args.older_than < 0:
        raise UsageError("--older-than must be >= 0 days")
    older = args.older_than * 86400 if args.older_than is not None else None
    max_bytes = int(args.max_size * 1024 * 1024) if args.max_size is not None else None
    from edgeship.pipelines.runner import clean_stale_workdirs

    count, freed = StageCache().prune(older_than_s=older, max_bytes=max_bytes)
    stale = clean_stale_workdirs()
    print(f"removed {count} cache entries, freed {_size(freed)}" + (f"; removed {stale} stale work folders" if stale else ""))
    return 0


# --- keys and verify --------------------------------------------------------------------------------

def cmd_keys_generate(args: argparse.Namespace) -> int:
    from edgeship import artifact as art
    from edgeship.paths import default_signing_key

    private = Path(args.out) if args.out else default_signing_key()
    priv, pub = art.generate_keypair(private)
    kid = art.key_id(art.load_public_key(pub))
    print(f"private key: {priv} (keep it secret)\npublic key:  {pub} (give it to devices: Fleet trust.public_keys)\nkey id:      {kid}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgeship import artifact as art
    from edgeship.paths import default_signing_key

    target = Path(args.bundle)
    if not target.exists():
        raise UsageError(f"{target}: no such file or folder")
    keys = [Path(k) for k in args.key] if args.key else []
    if not keys:
        default_pub = default_signing_key().with_suffix(".pub")
        if not default_pub.is_file():
            raise ArtifactError("no public key to verify against: pass --key PUB", "untrusted-key")
        keys = [default_pub]
    for k in keys:
        if not k.is_file():
            raise UsageError(f"{k}: no such public key file")
    if target.is_dir():
        digest = art.verify_dir(target, keys)
    else:
        digest = art.verify_bundle(target, keys)
    print(f"OK {digest} ({target}): every file matches SHA256SUMS, signature valid")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """List the stages; a built-in one that cannot be loaded is a broken install (exit 1)."""
    from edgeship.errors import BuildError
    from edgeship.stages import registry

    print(f"{'stage':<12} {'version':<8} module")
    broken = 0
    for name in registry.DEFAULT_ORDER:
        try:
            cls = registry.get(name)
        except BuildError as err:
            broken += 1
            print(f"{name:<12} {'-':<8} BROKEN: {err}")
            continue
        print(f"{name:<12} {cls.version:<8} {cls.__module__}")
    for name in registry.names():
        if name not in registry.DEFAULT_ORDER:
            cls = registry.get(name)
            print(f"{name:<12} {cls.version:<8} {cls.__module__}")
    for warning in registry.load_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if broken else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("build", help="build Pipeline manifests into signed, validated artifacts",
                              description="Run the build stages (import, normalize, optimize, quantize, legalize, "
                                          "estimate, validate, package) with a content-addressed cache.")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yaml")
    p.add_argument("-o", "--output", default="out", metavar="DIR",
                   help="where artifacts are copied: DIR/<name>/ and DIR/<name>.tar (default: ./out)")
    p.add_argument("--target", metavar="NAME", help="build for this target instead of the manifest's")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="build N pipelines in parallel (processes)")
    p.add_argument("--no-cache", action="store_true", help="run every stage (results still refresh the cache)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines or summary table")
    from edgeship.output import add_output_option

    add_output_option(p, ("text", "json", "ndjson"), short=False)  # -o is the output folder here
    p.add_argument("--allow-path", action="append", metavar="DIR", help="also read model and data files under DIR "
                   "(repeatable; by default only the manifest's own folder; EDGESHIP_ALLOW_PATHS does the same)")
    p.add_argument("--key", metavar="PATH", help="ed25519 private key to sign with (default: EDGESHIP_SIGNING_KEY, else "
                                                "the state folder's keys/signing.key, generated on first use)")
    p.set_defaults(func=cmd_build)

    st = subparsers.add_parser("stages", help="list the build stages installed (built-in and entry points)")
    st.set_defaults(func=cmd_stages)

    cache = subparsers.add_parser("cache", help="the build cache: ls, prune")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    ls = cache_sub.add_parser("ls", help="list cache entries (stage, size, last used)")
    ls.set_defaults(func=cmd_cache_ls)
    prune = cache_sub.add_parser("prune", help="remove cache entries (all, unless limited)")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="only entries not used for DAYS days")
    prune.add_argument("--max-size", type=float, metavar="MB", help="keep the most recently used entries up to MB")
    prune.set_defaults(func=cmd_cache_prune)

    keys = subparsers.add_parser("keys", help="signing keys and the trust chain (root, rotate, revoke, trust)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser("generate", help="create an ed25519 signing key pair (never overwrites)")
    gen.add_argument("--out", metavar="PATH", help="private key path (default: the state dir's signing.key; "
                                                   "EDGESHIP_SIGNING_KEY overrides); the public key is PATH with .pub")
    gen.set_defaults(func=cmd_keys_generate)
    from edgeship.commands._keys_lifecycle import add_lifecycle_commands  # root, rotate, revoke, trust, cosign

    add_lifecycle_commands(keys_sub)

    v = subparsers.add_parser("verify", help="check an artifact folder or .tar: checksums and signature (exit 1 if not)")
    v.add_argument("bundle", metavar="BUNDLE_OR_DIR")
    v.add_argument("--key", action="append", metavar="PUB", help="trusted public key (repeatable; default: the state dir's signing.pub)")
    v.set_defaults(func=cmd_verify)
