"""Fleet manifests: devices, selectors, and bad input reported as file:line:col."""

from __future__ import annotations

import pytest

from edgeship.errors import ManifestError
from edgeship.fleet.inventory import load_fleet, matches, parse_selector
from tests.support.bundles import signing_keys

FLEET = """\
apiVersion: edgeship/v1
kind: Fleet
metadata: {{name: lab}}
trust:
  public_keys: [{pub}]
transports:
  ssh: {{user: edge, known_hosts: ./known_hosts, connect_timeout_s: 5}}
devices:
  - {{id: cam-01, target: host-cpu, transport: local, address: ./devices/cam-01, labels: {{site: lab, ring: canary}}}}
  - {{id: cam-02, transport: local, address: devices/cam-02, labels: {{site: lab, ring: main}}}}
  - {{id: pi-01, transport: ssh, address: "10.0.0.7:2222", root: /opt/edge, labels: {{site: field, ring: main}}}}
"""


@pytest.fixture
def fleet_path(tmp_path):
    _, pub = signing_keys(tmp_path)
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(pub=pub))
    return path


def test_load_fleet(fleet_path, tmp_path):
    fleet = load_fleet(fleet_path)
    assert fleet.name == "lab" and [d.id for d in fleet.devices] == ["cam-01", "cam-02", "pi-01"]
    assert fleet.device("cam-01").address == str(tmp_path / "devices" / "cam-01")
    assert fleet.device("pi-01").address == "10.0.0.7:2222" and fleet.device("pi-01").root == "/opt/edge"
    assert fleet.trusted_keys == [signing_keys(tmp_path)[1]]
    assert fleet.transport_settings("ssh")["user"] == "edge"
    assert fleet.resolve("./known_hosts") == tmp_path / "known_hosts"


def test_select_by_labels_and_expressions(fleet_path):
    fleet = load_fleet(fleet_path)
    ids = lambda sel: [d.id for d in fleet.select(sel)]  # noqa: E731
    assert ids({}) == ["cam-01", "cam-02", "pi-01"]
    assert ids({"site": "lab"}) == ["cam-01", "cam-02"]
    assert ids({"matchLabels": {"ring": "main"}}) == ["cam-02", "pi-01"]
    assert ids({"matchExpressions": [{"key": "site", "operator": "In", "values": ["field", "x"]}]}) == ["pi-01"]
    assert ids({"matchLabels": {"site": "lab"}, "matchExpressions": [{"key": "ring", "operator": "NotIn", "values": ["canary"]}]}) == ["cam-02"]
    assert ids({"matchExpressions": [{"key": "ring", "operator": "Exists"}]}) == ["cam-01", "cam-02", "pi-01"]
    assert ids({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}) == ["cam-01", "cam-02", "pi-01"]


def test_parse_selector_cli_forms():
    assert parse_selector(["site=lab", "ring=canary"]) == {"matchLabels": {"site": "lab", "ring": "canary"}}
    sel = parse_selector(["site in (lab,field)", "ring!=canary", "gpu", "!broken"])
    assert sel["matchExpressions"] == [
        {"key": "site", "operator": "In", "values": ["lab", "field"]},
        {"key": "ring", "operator": "NotIn", "values": ["canary"]},
        {"key": "gpu", "operator": "Exists"},
        {"key": "broken", "operator": "DoesNotExist"},
    ]
    assert matches(parse_selector(["site=lab,ring!=canary"]), {"site": "lab", "ring": "main"})


def test_bad_fleet_reports_every_problem_with_positions(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: lab}\ndevices:\n"
        "  - {id: cam-01, transport: local, address: a}\n"
        "  - {id: cam-01, transport: local, address: b}\n"
        "  - {id: cam-03, transport: ssh}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_fleet(path)
    text = str(info.value)
    assert f"{path}:6:" in text and "duplicate" in text
    assert f"{path}:7:" in text and "address" in text
