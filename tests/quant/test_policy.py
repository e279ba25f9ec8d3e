"""quant_policy: manifest values held against target constraints (explicit conflicts are errors)."""

import pytest

from edgeship.errors import BuildError
from edgeship.stages.quant_policy import resolve_policy
from edgeship.targets import load_target

DPU = load_target("amd-kria-k26-dpu").data
HOST = load_target("host-cpu").data
PSOC = load_target("infineon-psoc-edge-e84").data


def where(*path):
    return ("p.yaml", 12, 5)


def test_defaults_adapt_to_the_dpu():
    policy = resolve_policy({"quantization": {"mode": "static"}}, DPU, where)
    assert policy.weight_dtype == "int8" and policy.activation_dtype == "int8"
    assert not policy.per_channel and policy.weight_symmetric and policy.activation_symmetric
    assert policy.power_of_two and not policy.dynamic_allowed
    assert any("per-tensor" in n for n in policy.notes)


def test_host_prefers_u8s8_and_per_channel():
    policy = resolve_policy({"quantization": {}}, HOST, where)
    assert policy.mode == "auto" and policy.activation_dtype == "uint8" and policy.weight_dtype == "int8"
    assert policy.per_channel and policy.dynamic_allowed and not policy.power_of_two


@pytest.mark.parametrize("quantization, words", [
    ({"weights": {"granularity": "per-channel"}}, ["quantization.weights.granularity", "per-channel", "amd-kria-k26-dpu"]),
    ({"activations": {"symmetric": False}}, ["quantization.activations.symmetric", "symmetric-only"]),
    ({"weights": {"dtype": "uint8"}}, ["quantization.weights.dtype", "uint8", "allowed: int8"]),
    ({"mode": "dynamic"}, ["quantization.mode", "dynamic"]),
    ({"weights": {"dtype": "int4"}}, ["int4", "not produced"]),
])
def test_explicit_conflicts_point_at_the_manifest(quantization, words):
    with pytest.raises(BuildError) as err:
        resolve_policy({"quantization": {"mode": "static", **quantization}}, DPU, where)
    text = str(err.value)
    assert "p.yaml:12:5" in text and "\n" not in text
    for w in words:
        assert w in text


def test_weights_symmetric_only_target():
    policy = resolve_policy({"quantization": {"mode": "static"}}, PSOC, where)
    assert policy.weight_symmetric and policy.weight_dtype == "int8"
    with pytest.raises(BuildError, match="symmetric weights"):
        resolve_policy({"quantization": {"mode": "static", "weights": {"symmetric": False}}}, PSOC, where)
