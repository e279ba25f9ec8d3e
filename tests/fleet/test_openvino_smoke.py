"""The device smoke test on OpenVINO releases: a real IR made here by the `openvino` backend (a small int8
Gemm model built in code) runs on the CPU plugin with the precision the build validated; a damaged
model.xml or model.bin, an NPU this machine lacks and a missing openvino package are each one line with
the fix; telemetry is declined before openvino is imported, by the smoke test and by `agent selftest`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeship.errors import AgentError
from edgeship.fleet.agent_config import SmokeConfig
from edgeship.fleet.smoke import smoke_test
from tests.support.require import require_module

REPO = Path(__file__).resolve().parents[2]


def _release(tmp_path: Path, device: str = "CPU") -> Path:
    """What the package stage ships for an OpenVINO target: the backend's IR + openvino.json, bundle.json, samples."""
    require_module("openvino")
    from edgeship.targets.backends.openvino import OpenVINOBackend
    from tests.backends.qdq_models import const, one_op, quantize

    rng = np.random.default_rng(0)
    model = one_op("Gemm", [1, 16], [1, 8], [const("w", rng.standard_normal((16, 8)).astype(np.float32) * 0.2),
                                             const("b", np.zeros(8, np.float32))], ["w", "b"], post="Relu")
    qdq = quantize(model, tmp_path / "q")
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=rng.standard_normal((3, 1, 16)).astype(np.float32))
    lowered = OpenVINOBackend(device=device, quantizer="edgeship", runs=1).lower(qdq, None, tmp_path / "lower",
                                                                                 samples=samples)
    release = tmp_path / "release"
    release.mkdir()
    for name, path in lowered.files.items():
        (release / name).write_bytes(Path(path).read_bytes())
    (release / "bundle.json").write_text(json.dumps({
        "format": 1, "name": "gemm", "target": "intel-core-ultra-cpu", "runtime": lowered.runtime,
        "inputs": {"x": {"shape": [1, 16], "dtype": "float32"}}, "budget": {"latency_ms": {"p95": 1000}},
        "native_files": sorted(lowered.files)}))
    (release / "samples.npz").write_bytes(samples.read_bytes())
    return release


def _one_line_failure(release: Path) -> str:
    with pytest.raises(AgentError) as err:
        smoke_test(release, SmokeConfig(samples=2, runs=1))
    assert err.value.reason == "smoke-failed"
    message = str(err.value)
    assert "\n" not in message and message.startswith("smoke test: ")
    return message


def test_an_openvino_release_runs_on_the_cpu_plugin_at_its_validated_precision(tmp_path):
    release = _release(tmp_path)
    assert json.loads((release / "openvino.json").read_text())["device"] == "CPU"
    figures = smoke_test(release, SmokeConfig(samples=3, runs=2))
    assert figures["samples"] == 3 and figures["runs"] == 6
    assert figures["p95_ms"] >= figures["p50_ms"] > 0 and figures["budget_p95_ms"] == 1000
    assert figures["device"] == "CPU" and figures["precision"] == "f32"  # not bf16, whatever the CPU


def test_the_session_gives_the_onnx_input_names_and_finite_outputs(tmp_path):
    from edgeship.fleet.openvino_runtime import openvino_session

    session = openvino_session(_release(tmp_path))
    assert [i.name for i in session.get_inputs()] == ["x"]
    (out,) = session.run(None, {"x": np.ones((1, 16), np.float32)})
    assert out.shape == (1, 8) and np.all(np.isfinite(out)) and np.all(out >= 0)  # Relu


def test_a_corrupt_model_xml_is_one_line(tmp_path):
    release = _release(tmp_path)
    xml = release / "model.xml"
    xml.write_text(xml.read_text()[: len(xml.read_text()) // 2])  # cut mid-element
    message = _one_line_failure(release)
    assert message.startswith("smoke test: OpenVINO cannot read model.xml/model.bin: Error parsing"), message


def test_a_truncated_model_bin_is_one_line(tmp_path):
    release = _release(tmp_path)
    weights = release / "model.bin"
    weights.write_bytes(weights.read_bytes()[:8])
    message = _one_line_failure(release)
    assert message == "smoke test: OpenVINO cannot read model.xml/model.bin: Incorrect weights in bin file!", message


def test_a_missing_model_bin_is_one_line(tmp_path):
    release = _release(tmp_path)
    (release / "model.bin").unlink()
    assert _one_line_failure(release) == ("smoke test: the release has no model.bin (an OpenVINO artifact carries "
                                          "model.xml and model.bin)")


def test_an_npu_release_on_a_device_without_the_npu_names_the_driver(tmp_path):
    require_module("openvino")
    import openvino

    if "NPU" in openvino.Core().available_devices:
        pytest.skip("this machine has an Intel NPU: the release would run")
    release = _release(tmp_path, device="NPU")
    message = _one_line_failure(release)
    assert message.startswith("smoke test: this release was built for OpenVINO device NPU, which this device lacks "
                              "(OpenVINO lists: "), message
    assert "linux-npu-driver" in message


def test_without_openvino_installed_the_error_says_what_to_install(tmp_path, monkeypatch):
    release = _release(tmp_path)
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert _one_line_failure(release) == ("smoke test: this release runs on OpenVINO, which is not installed on this "
                                          "device: pip install 'edgeship[agent,openvino-runtime]'")


def test_a_release_without_openvino_json_takes_the_device_from_its_report(tmp_path):
    from edgeship.fleet.openvino_runtime import release_config

    (tmp_path / "report.json").write_text(json.dumps({"stages": {"lower": {"device": "NPU"}}}))
    assert release_config(tmp_path)["device"] == "NPU"
    (tmp_path / "report.json").unlink()
    assert release_config(tmp_path)["device"] == "CPU"


def _in_fresh_home(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess, Path]:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "CI": "", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300), home


def test_a_device_install_runs_it_and_declines_telemetry_before_importing_openvino(tmp_path):
    """As on an `edgeship[agent,openvino-runtime]` board: no build side, no NNCF, no onnxruntime."""
    release = _release(tmp_path)
    absent = ("onnx", "onnxruntime", "nncf", "jsonschema", "fabric", "paramiko")
    code = (f"import sys; sys.modules.update(dict.fromkeys({absent!r}));"
            "from edgeship.fleet.agent_config import SmokeConfig; from edgeship.fleet.smoke import smoke_test;"
            f"print(smoke_test({str(release)!r}, SmokeConfig(samples=1, runs=1))['device'])")
    done, home = _in_fresh_home(tmp_path, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "CPU"
    assert (home / "intel" / "openvino_telemetry").read_text() == "0"
    assert sorted(p.name for p in (home / "intel").iterdir()) == ["openvino_telemetry"]  # no client id


def test_selftest_reports_openvino_and_declines_its_telemetry(tmp_path):
    require_module("openvino")
    code = "import json; from edgeship.fleet.device_info import selftest; print(json.dumps(selftest(%r)))" % str(tmp_path / "root")
    done, home = _in_fresh_home(tmp_path, code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"], report["problems"]
    assert report["runtimes"]["openvino"].startswith("2026.4")
    assert (home / "intel" / "openvino_telemetry").read_text() == "0"
