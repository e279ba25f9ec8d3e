"""The example update pair (examples/kws/pipeline-v1.yaml -> pipeline-v2.yaml, a retrained head) built
for real shares bytes over MQTT, and each rollout reports the bytes it sent against the artifact's size."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from edgeship.cli import main
from tests.mqtt.conftest import write_mqtt_fleet
from tests.quant.helpers import EXAMPLES, make_example

pytestmark = pytest.mark.integration

DEVICES = ("cam-01", "cam-02")


def test_the_example_pair_pins_one_quantization():
    v1, v2 = (yaml.safe_load((EXAMPLES / "kws" / f"pipeline-{v}.yaml").read_text()) for v in ("v1", "v2"))
    assert v1["quantization"] == v2["quantization"] and v1["quantization"]["mode"] != "auto"
    assert {k: v for k, v in v1.items() if k not in ("metadata", "model")} == \
        {k: v for k, v in v2.items() if k not in ("metadata", "model")}


def _ratio(out: str) -> float:
    found = re.search(r"bytes pushed to (\d+) device\(s\), ([0-9.]+)x the (\d+)-byte artifact each", out)
    assert found, out
    assert int(found.group(1)) == len(DEVICES)
    return float(found.group(2))


def test_example_update_sends_less_than_the_artifact(tmp_path, mosquitto_broker, make_service, keys, monkeypatch,
                                                     capsys):
    example = tmp_path / "kws"
    make_example("kws", example, variant="v1")
    make_example("kws", example, variant="v2")
    for name in ("pipeline-v1.yaml", "pipeline-v2.yaml"):
        shutil.copyfile(EXAMPLES / "kws" / name, example / name)
    monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(keys[0]))
    assert main(["build", "-q", "-o", str(tmp_path / "out"), str(example / "pipeline-v1.yaml"),
                 str(example / "pipeline-v2.yaml")]) == 0, capsys.readouterr().err

    broker = mosquitto_broker()
    for d in DEVICES:
        make_service(broker.url, d).start().client.wait_connected(10)
    fleet = write_mqtt_fleet(tmp_path / "fleet.yaml", "delta", broker.url, keys[1], DEVICES, chunk_kb=4,
                             timeout_s=120, store_dir=str(tmp_path / "manager"))
    ratios = []
    for tar in ("kws-host-v1.tar", "kws-host-v2.tar"):
        rollout = tmp_path / "rollout.yaml"  # one rollout, its artifact updated: the GitOps way
        rollout.write_text(yaml.safe_dump({
            "apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": "kws"}, "fleet": str(fleet),
            "artifact": {"path": str(tmp_path / "out" / tar)},
            "strategy": {"canary": {"count": 1}, "waves": [100], "max_unavailable": 2}}))
        capsys.readouterr()
        assert main(["apply", str(rollout)]) == 0, capsys.readouterr().err
        ratios.append(_ratio(capsys.readouterr().out))
    full, update = ratios
    assert full >= 0.99  # nothing to reuse: the whole artifact (plus chunk framing)
    assert update < 0.7, ratios  # the retrained head: the unchanged model bytes are not sent again
    print(f"example kws v1 -> v2 over MQTT (chunk_kb 4): {update:.2f}x the artifact per device (v1: {full:.2f}x)")
