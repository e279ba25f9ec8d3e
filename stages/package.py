"""Stage `package`: the signed, content-addressed artifact (format in edgeship/artifact.py).

Writes `model.onnx`, `samples.npz` (a few validation inputs for the device smoke test),
`bundle.json`, `edgeship.lock.json` (digest of every input, tool versions, stage keys), `report.json`,
`report.html`, then `SHA256SUMS` and its ed25519 signature, and stores the folder and its `.tar` in
`state_dir()/artifacts/<hex>`. It also profiles the final model once with onnxruntime (time per op
type, single-thread smoke latency) for the report and for the device's smoke-test expectation.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

from edgeship import __version__
from edgeship import artifact as art
from edgeship.errors import BuildError
from edgeship.paths import default_signing_key, state_dir
from edgeship.pipelines.data import sample_at
from edgeship.stages.base import BaseStage, canonical_json
from edgeship.stages.registry import register

SMOKE_SAMPLES = 4
PROFILE_RUNS = 5


def artifacts_root() -> Path:
    root = state_dir() / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def ensure_signing_key(announce=None) -> Path:
    """The default signing key, generated on first use (and announced: the user must publish the .pub)."""
    key = default_signing_key()
    if key.exists():
        return key
    if os.environ.get("EDGESHIP_SIGNING_KEY"):  # a named key that is missing is a setup error, not a reason to mint one
        raise BuildError(f"EDGESHIP_SIGNING_KEY names {key}, which does not exist "
                         "(create it with `edgeship keys generate --out` or fix the variable)", stage="package")
    try:
        _, pub = art.generate_keypair(key)
    except Exception as err:  # another build process created it first
        if key.exists():
            return key
        raise BuildError(f"cannot create signing key {key}: {err}", stage="package") from None
    message = f"edgeship: generated a new signing key {key} (public key {pub}: give it to your devices' trusted_keys)"
    (announce or (lambda m: print(m, file=sys.stderr)))(message)
    return key


def signing_key_id(key: Path) -> str:
    return art.key_id(art.load_private_key(key).public_key())


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"edgeship": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def profile_model(model_path: Path, samples: dict[str, np.ndarray], workdir: Path, runs: int = PROFILE_RUNS) -> tuple[dict, list]:
    """(microseconds per op type, single-thread latencies in ms) from onnxruntime's profiler."""
    import time

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(workdir / "ort_profile")
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    n = next(iter(samples.values())).shape[0] if samples else 1
    feeds = [sample_at(samples, i) for i in range(n)]
    sess.run(None, feeds[0])  # warm-up
    latencies = []
    for r in range(runs):
        for feed in feeds:
            t0 = time.perf_counter()
            sess.run(None, feed)
            latencies.append((time.perf_counter() - t0) * 1000.0)
    trace = Path(sess.end_profiling())
    per_op: dict[str, float] = {}
    try:
        for event in json.loads(trace.read_text()):
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
                op = (event.get("args") or {}).get("op_name", "?")
                per_op[op] = per_op.get(op, 0.0) + float(event.get("dur", 0))
    finally:
        trace.unlink(missing_ok=True)
    total_runs = max(1, runs * n + 1)
    return {k: round(v / total_runs, 2) for k, v in sorted(per_op.items())}, [round(x, 4) for x in latencies]


def _io(model_path: Path) -> tuple[dict, dict]:
    import onnx

    from edgeship.stages.onnx_util import dims_of, dtype_name, graph_inputs

    model = onnx.load(str(model_path), load_external_data=False)
    inputs = {vi.name: {"shape": dims_of(vi), "dtype": dtype_name(vi)} for vi in graph_inputs(model)}
    outputs = {vi.name: {"shape": dims_of(vi), "dtype": dtype_name(vi)} for vi in model.graph.output}
    return inputs, outputs


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def release_counter(created: str) -> int:
    """The anti-rollback counter in the signed bundle.json: devices refuse a release of the same
    pipeline with a lower one unless told to roll back. `EDGESHIP_RELEASE` (e.g. the CI build
    number) sets it; else it is the build time in seconds, so later builds count higher."""
    named = os.environ.get("EDGESHIP_RELEASE")
    if named:
        if not named.isdigit():
            raise BuildError(f"EDGESHIP_RELEASE must be a non-negative integer, got {named!r}", stage="package")
        return int(named)
    return int(_dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp())


def _expected_p95(report: dict, smoke_ms: list[float]) -> float:
    """What the device's smoke test should take: validate's single-thread p95, else our own smoke runs."""
    lat = (report.get("validate") or {}).get("latency") or {}
    for mode in ("single_thread", "1_thread", "threads_1"):
        entry = lat.get(mode) if isinstance(lat.get(mode), dict) else {}
        value = entry.get("p95_ms", entry.get("p95"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return round(float(value), 4)
    return round(float(np.percentile(smoke_ms, 95)), 4) if smoke_ms else 0.0


def _write_model(src: Path, dst: Path) -> None:
    if src.with_name(src.name + ".data").is_file():
        import onnx

        model = onnx.load(str(src), load_external_data=True)
        if model.ByteSize() >= 2_000_000_000:
            raise BuildError("models over 2 GB cannot be packaged in one model.onnx yet", stage="package")
        onnx.save(model, str(dst))
    else:
        shutil.copyfile(src, dst)


def store(staging: Path, digest: str) -> tuple[Path, Path]:
    """Move a finished artifact folder into the store (first writer wins) and pack its tar."""
    hexd = digest.split(":", 1)[1]
    root = artifacts_root()
    final = root / hexd
    if not (final / art.SUMS).is_file():
        tmp = root / f".{hexd}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(staging, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    tar = root / f"{hexd}.tar"
    if not tar.is_file():
        art.pack(final, root / f".{hexd}.{os.getpid()}.tar")
        os.replace(root / f".{hexd}.{os.getpid()}.tar", tar)
    return final, tar


@register
class PackageStage(BaseStage):
    name = "package"
    version = "3"  # 2: report.html opens with the budget verdict; 3: bundle.json carries the release counter

    def config(self, ctx):
        return {"name": ctx.name, "target": ctx.target_name, "budget": ctx.setting("budget"),
                "release": os.environ.get("EDGESHIP_RELEASE"),
                "smoke_samples": SMOKE_SAMPLES, "edgeship": __version__}

    def input_digests(self, ctx):
        earlier = {k: v for k, v in ctx.report.items() if k != self.name}
        return {
            "model": ctx.digests.get("model", ""),
            "float_model": ctx.digests.get("float_model", ""),
            "stage_keys": {k: v for k, v in ctx.stage_keys.items() if k != self.name},
            "report": hashlib.sha256(canonical_json(earlier).encode()).hexdigest(),
            "validation": ctx.data_digest("validation"),
            "calibration": ctx.data_digest("calibration"),  # recorded in the lock
            "manifest": ctx.digests.get("manifest", ""),  # recorded in the lock
            "target": ctx.target_digest(),
            "signing_key": signing_key_id(ensure_signing_key()),
        }

    def cache_ok(self, ctx):
        info = ctx.extra.get("artifact") or {}
        return bool(info) and (Path(info.get("dir", "")) / art.SUMS).is_file() and Path(info.get("tar", "")).is_file()

    def run(self, ctx):
        if ctx.model_path is None:
            raise BuildError("no model to package (the import stage did not run)", stage=self.name)
        key = ensure_signing_key()
        staging = ctx.workdir / "artifact"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _write_model(Path(ctx.model_path), staging / "model.onnx")
        inputs, outputs = _io(staging / "model.onnx")
        samples = ctx.sample_inputs(SMOKE_SAMPLES)
        np.savez(staging / "samples.npz", **samples)
        try:
            op_time, smoke_ms = profile_model(staging / "model.onnx", samples, ctx.workdir)
        except Exception as err:
            raise BuildError(f"the packaged model does not run in onnxruntime: {str(err).splitlines()[0]}", stage=self.name) from None
        created = _created()
        model_sha = art.sha256_file(staging / "model.onnx")
        section = {
            "model_sha256": model_sha,
            "model_bytes": (staging / "model.onnx").stat().st_size,
            "op_time_us": op_time,
            "smoke_samples_ms": smoke_ms,
            "smoke_p50_ms": round(float(np.percentile(smoke_ms, 50)), 4) if smoke_ms else None,
            "expected_p95_ms": _expected_p95(ctx.report, smoke_ms),
        }
        ctx.report[self.name] = section
        bundle = {
            "format": 1, "name": ctx.name, "target": ctx.target_name, "inputs": inputs, "outputs": outputs,
            "budget": ctx.setting("budget") or {},
            "smoke": {"samples": int(next(iter(samples.values())).shape[0]) if samples else 0,
                      "expected_p95_ms": section["expected_p95_ms"]},
            "created": created, "release": release_counter(created), "edgeship_version": __version__,
        }
        lock = {
            "format": 1,
            "pipeline": {"name": ctx.name, "manifest": str(getattr(ctx.pipeline, "source", "")),
                         "sha256": ctx.digests.get("manifest", "")},
            "inputs": {
                "model": {"path": str(ctx.resolve(ctx.setting("model", "path", default=""))),
                          "sha256": ctx.digests.get("source_model", "")},
                "calibration_data": {"path": ctx.setting("quantization", "calibration", "data"), "sha256": ctx.data_digest("calibration")},
                "validation_data": {"path": ctx.setting("validation", "data"), "sha256": ctx.data_digest("validation")},
                "target": {"name": ctx.target_name, "sha256": ctx.target_digest()},
            },
            "tools": tool_versions(),
            "stages": [{"name": r.name, "status": r.status, "key": r.key} for r in ctx.records if r.name != self.name]
                      + [{"name": self.name, "status": "ran", "key": ctx.stage_keys.get(self.name, "")}],
            "model_sha256": model_sha,
            "signing_key_id": signing_key_id(key),
        }
        report = {
            "name": ctx.name, "target": ctx.target_name, "created": created, "edgeship_version": __version__,
            "model_sha256": model_sha, "warnings": list(ctx.warnings),
            "build": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 3), "key": r.key} for r in ctx.records],
            "stages": ctx.report,
        }
        from edgeship.stages.report import render_html

        (staging / "bundle.json").write_text(json.dumps(bundle, indent=2, default=str) + "\n")
        (staging / "edgeship.lock.json").write_text(json.dumps(lock, indent=2, default=str) + "\n")
        (staging / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (staging / "report.html").write_text(render_html(report))
        digest = art.write_checksums(staging)
        kid = art.sign(staging, key)
        folder, tar = store(staging, digest)
        shutil.rmtree(staging, ignore_errors=True)
        section.update({"digest": digest, "key_id": kid})
        ctx.extra["artifact"] = {"digest": digest, "dir": str(folder), "tar": str(tar), "key_id": kid}
        return ctx
