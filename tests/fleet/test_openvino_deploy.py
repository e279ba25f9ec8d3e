"""An OpenVINO artifact reaches a device: the kws example built for intel-core-ultra-cpu (OpenVINO IR
through the `openvino` backend) deploys to a local device, whose agent smoke-tests the IR on
OpenVINO's CPU plugin and switches `current` to it.

The reproduction of the gap this closes: the same deploy used to fail on every device with
"smoke test: this agent has no runner for runtime 'openvino'"."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.bootstrap.runtime_check import target_runtime
from edgeship.paths import default_signing_key
from tests.quant.helpers import make_example, write_pipeline
from tests.support.require import require_module


def test_kws_built_for_intel_core_ultra_cpu_deploys_and_activates(tmp_path, monkeypatch, capsys):
    require_module("openvino")
    require_module("nncf")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # OpenVINO's telemetry consent file lands here, not in ~
    _, pub = artifact.generate_keypair(default_signing_key())
    example = make_example("kws", tmp_path / "kws")
    manifest = write_pipeline(tmp_path, example, "kws", target="intel-core-ultra-cpu", name="kws-intel",
                              budget={"latency_ms": {"p95": 1000}})
    assert main(["build", str(manifest), "-o", str(tmp_path / "out"), "-q"]) == 0, capsys.readouterr().err
    bundle = tmp_path / "out" / "kws-intel.tar"
    folder = tmp_path / "out" / "kws-intel"
    assert json.loads((folder / "bundle.json").read_text())["runtime"] == "openvino" == target_runtime("intel-core-ultra-cpu")

    fleet = {"apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": "intel-lab"},
             "trust": {"public_keys": [str(pub)]},
             "devices": [{"id": "laptop-01", "target": "intel-core-ultra-cpu", "transport": "local",
                          "address": "devices/laptop-01"}]}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    capsys.readouterr()
    code = main(["deploy", "--fleet", str(tmp_path / "fleet.yaml"), str(bundle), "--no-progress", "-o", "json"])
    out, err = capsys.readouterr()
    assert "no runner for runtime" not in out + err
    assert code == 0, out + err
    (row,) = json.loads(out)["devices"]
    assert row["ok"] and row["message"] == "activated"
    assert row["figures"]["device"] == "CPU" and row["figures"]["precision"] == "f32" and row["figures"]["runs"] > 0
    current = Path(tmp_path / "devices" / "laptop-01" / "current").resolve()
    assert current.name == artifact.bundle_digest(bundle).split(":")[-1]
    assert (current / "model.xml").is_file() and (current / "model.bin").is_file()
