"""The backend seam end to end: registry and missing extras, the lower stage with Vela on the Ethos-U
profiles (artifact files, vendor figures the budget gates on, placement from Vela), and the device
smoke test running whichever runtime the artifact names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeship.errors import AgentError, BuildError
from tests.quant.helpers import EXAMPLES, make_example
from tests.support.require import require_module

from tests.backends.qdq_models import const, one_op, quantize

FULL = ("import", "normalize", "optimize", "quantize", "legalize", "lower", "estimate", "validate", "package")


def test_profiles_name_their_backend():
    from edgeship.targets import load_target
    from edgeship.targets.backends import backend_spec

    assert backend_spec(load_target("infineon-psoc-edge-e84").data)[0] == "vela"
    assert backend_spec(load_target("raspberry-pi-5").data)[0] == "tflite"
    assert backend_spec(load_target("host-cpu").data) == ("onnxruntime", {})


def test_unknown_backend_suggests_the_nearest():
    from edgeship.targets.backends import get_backend

    with pytest.raises(BuildError, match="unknown backend 'vella'.*did you mean vela"):
        get_backend("vella")


def test_missing_extra_says_what_to_pip_install(monkeypatch):
    import importlib

    from edgeship.targets import backends

    real = importlib.import_module

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backends, "_registry", {})
    monkeypatch.setattr(backends.importlib, "import_module", no_litert)
    with pytest.raises(BuildError, match=r"pip install 'edgeship\[tflite\]'"):
        backends.get_backend("vela")


@pytest.fixture(scope="module")
def kws_dir(tmp_path_factory):
    import shutil

    folder = make_example("kws", tmp_path_factory.mktemp("kws"))
    shutil.copy(EXAMPLES / "kws" / "pipeline-psoc.yaml", folder / "pipeline-psoc.yaml")
    return folder


@pytest.mark.parametrize("target", ["infineon-psoc-edge-e84", "arm-ethos-u65", "arm-ethos-u85"])
def test_kws_lowers_with_vela(kws_dir, target):
    require_module("ethosu.vela")
    manifest = kws_dir / "pipeline-psoc.yaml"
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build as run_build

    result = run_build(load_documents(manifest)[0], target=target, stages=list(FULL), use_cache=False,
                       progress=Progress(quiet=True))
    assert result.ok, result.error
    lower = result.ctx.report["lower"]
    assert lower["backend"] == "vela" and lower["cycles"] > 0 and lower["operators"]["cpu"] == 0
    assert result.ctx.report["estimate"]["latency_ms"] == lower["latency_ms"]  # the budget gates on Vela's figure
    assert result.ctx.report["estimate"]["vendor"]["roofline_ratio"] > 0
    assert result.ctx.report["legalize"]["decided_by"] == "Arm Vela"
    validate = result.ctx.report["validate"]
    assert validate["runtime"] == "LiteRT" and validate["accuracy"]["primary"]["top1_agreement"] >= 0.9  # what ships, vs float
    folder = Path(result.ctx.extra["artifact"]["dir"])
    for name in ("model.tflite", "model_vela.tflite", "model_data.cc", "model_data.h", "vela_summary.csv", "vela_per_layer.csv"):
        assert (folder / name).is_file(), name
    assert "alignas(16)" in (folder / "model_data.cc").read_text()
    bundle = json.loads((folder / "bundle.json").read_text())
    assert bundle["runtime"] == "tflite-micro+ethos-u"


def _release(tmp_path: Path, runtime: str) -> Path:
    from edgeship.targets.backends.tflite_backend import write_tflite

    model = one_op("Gemm", [1, 16], [1, 8], [const("w", np.ones((16, 8), np.float32) * 0.1), const("b", np.zeros(8, np.float32))],
                   ["w", "b"])
    qdq = quantize(model, tmp_path / "q")
    release = tmp_path / "release"
    write_tflite(qdq, release)
    (release / "bundle.json").write_text(json.dumps({"runtime": runtime, "budget": {}}))
    np.savez(release / "samples.npz", x=np.random.default_rng(0).standard_normal((2, 1, 16)).astype(np.float32))
    return release


def test_smoke_runs_a_litert_artifact(tmp_path):
    require_module("ai_edge_litert")
    from edgeship.fleet.agent_config import SmokeConfig
    from edgeship.fleet.smoke import smoke_test

    figures = smoke_test(_release(tmp_path, "litert"), SmokeConfig(samples=2, runs=1))
    assert figures["samples"] == 2 and figures["runs"] == 2


def test_smoke_refuses_an_mcu_artifact(tmp_path):
    require_module("ai_edge_litert")
    from edgeship.fleet.agent_config import SmokeConfig
    from edgeship.fleet.smoke import smoke_test

    with pytest.raises(AgentError, match="microcontroller firmware build"):
        smoke_test(_release(tmp_path, "tflite-micro+ethos-u"), SmokeConfig())


def test_ethos_u_peak_comes_from_the_backend_config_when_the_profile_has_none():
    from edgeship.targets import load_target
    from edgeship.targets.backends.ethos_u import macs_per_cycle
    from edgeship.targets.profileview import ProfileView

    assert macs_per_cycle("ethos-u55-128") == 128 and macs_per_cycle("ethos-u55-128", "int16x8") == 64
    assert macs_per_cycle("ethos-u85-256", "int16") == 256 and macs_per_cycle("cortex-a76") is None
    data = json.loads(json.dumps(load_target("infineon-psoc-edge-e84").data))
    data["compute"]["accelerator"]["peak_tops"] = {"int8": None, "int16x8": None}  # a profile without a public peak
    data["backend"]["options"]["accelerator_config"] = "ethos-u55-64"
    peak, note = ProfileView(data).peak_ops_per_s("accelerator", "int8")
    assert peak == 2 * 64 * 400e6 and "Vela accelerator config" in note


def test_roofline_fit_to_vela_brings_the_estimate_within_1_5x(kws_dir):
    require_module("ethosu.vela")
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build as run_build
    from edgeship.stages.legalize import target_graph
    from edgeship.targets import load_target
    from edgeship.targets.backends.vela_calibration import Sample, fit

    result = run_build(load_documents(kws_dir / "pipeline-psoc.yaml")[0], stages=list(FULL[:7]), use_cache=False,
                       keep_workdir=True, progress=Progress(quiet=True))
    assert result.ok, result.error
    ctx = result.ctx
    sample = Sample("kws", target_graph(ctx, "test"), ctx.report["legalize"], ctx.report["lower"]["latency_ms"])
    fitted = fit([sample], load_target("infineon-psoc-edge-e84"))
    assert fitted["worst_ratio"] <= 1.5, fitted


def test_vela_console_of_its_regor_compiler_gives_op_and_reason():
    from edgeship.targets.backends.vela import parse_console

    text = ("Warning (supported operators) operator: MEAN, ofm: '/ln/mean'\n"
            "Reason: Operation has tensor with unsupported DataType Float32 (/ln/x)\n"
            "Feature-map dataTypes must be one of {\"INT8\"}\n\n"
            "CPU operators = 1 (50.0%)\n"
            "   CPU: Passthrough = /ln/mean (outputs [1, 16, 1, 1])\n"
            "   NPU: Conv2D = /conv/out (outputs [1, 5, 25, 64])\n")
    ops, reasons = parse_console(text)
    assert ops == [{"unit": "CPU", "op": "Mean", "name": "/ln/mean"}, {"unit": "NPU", "op": "Conv2D", "name": "/conv/out"}]
    assert reasons["/ln/mean"] == ["Operation has tensor with unsupported DataType Float32 (/ln/x)"]


def test_third_party_backend_registers_by_entry_point(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from edgeship.targets import backends

    class MyChipBackend:
        name, version, integer_only = "mychip", "1", False

        def __init__(self, level: int = 0):
            self.level = level

        def lower(self, model, target, workdir):
            return backends.Lowered({"model.bin": model}, "mychip-runtime", {"level": self.level})

    ep = SimpleNamespace(name="mychip", value="mypkg.backend:MyChipBackend", load=lambda: MyChipBackend)
    monkeypatch.setattr(backends, "_registry", {})
    monkeypatch.setattr(backends.metadata, "entry_points", lambda group: [ep] if group == backends.ENTRY_POINT_GROUP else [])
    instance = backends.backend_for({"backend": {"name": "mychip", "options": {"level": 3}}})
    lowered = instance.lower(tmp_path / "m.onnx", None, tmp_path)
    assert lowered.runtime == "mychip-runtime" and lowered.report == {"level": 3}
