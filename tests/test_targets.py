"""The chip target catalog: every profile is valid and sourced, the API helpers answer what the
quantizer / legalizer / cost model ask, local overrides merge, and `edgeship targets` prints it all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from edgeship.cli import main as cli_main
from edgeship.errors import TargetError
from edgeship.paths import state_dir
from edgeship.targets import TargetProfile, list_targets, load_target, target_names, target_schema
from edgeship.targets.profile import PROFILES_DIR, dangling_sources, unsourced_figures

PROFILE_FILES = sorted(PROFILES_DIR.glob("*.yaml"))
REQUIRED = {
    "sima-mlsoc", "amd-kria-k26-dpu", "infineon-psoc-edge-e84", "dmatrix-corsair", "amd-ryzen-ai-npu",
    "nvidia-jetson-orin-nano", "raspberry-pi-5", "arm-ethos-u65", "arm-ethos-u85", "host-cpu",
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_override(name: str, text: str) -> Path:
    folder = state_dir() / "targets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


# -- the catalog itself ---------------------------------------------------------------------------

def test_catalog_has_every_required_chip():
    assert REQUIRED <= set(target_names())


def test_schema_is_valid_draft_2020_12():
    schema = target_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_validates_against_schema(path):
    data = yaml.safe_load(path.read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(target_schema()).iter_errors(data)]
    assert errors == []
    assert data["metadata"]["name"] == path.stem


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_figure_has_a_public_source(path):
    data = yaml.safe_load(path.read_text())
    assert unsourced_figures(data) == []
    assert dangling_sources(data) == []
    for source in data["sources"]:
        assert source["url"].startswith(("https://", "http://"))


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_null_figures_are_explained(path):
    """Unknown figures are null, and a profile with nulls says why somewhere (notes or source notes)."""
    data = yaml.safe_load(path.read_text())
    has_null = "null" in yaml.safe_dump({k: data[k] for k in ("compute", "memory")})
    if has_null:
        assert data.get("notes"), "a profile with unknown (null) figures must say why in notes"


def test_list_targets_loads_every_profile():
    profiles = list_targets()
    assert {p.name for p in profiles} == set(target_names())
    assert all(isinstance(p, TargetProfile) for p in profiles)


def test_only_this_hosts_targets_are_measurable():
    """host-cpu (onnxruntime) and host-cpu-litert (LiteRT + XNNPACK, onnxruntime fallback): the same machine."""
    assert [p.name for p in list_targets() if p.measurable] == ["host-cpu", "host-cpu-litert"]


def test_a_profile_without_host_fallback_exists_for_the_compile_stage():
    u85 = load_target("arm-ethos-u85")
    assert u85.host_fallback.enabled is False
    assert not u85.runs_any_op
    assert u85.supports_op("NonMaxSuppression") is None
    assert u85.host_runs("NonMaxSuppression") is False


# -- the API helpers ------------------------------------------------------------------------------

def test_host_cpu_shape_and_helpers():
    cpu = load_target("host-cpu")
    assert cpu.runtime.execution_provider == "CPUExecutionProvider"
    assert cpu.compute.accelerator.peak_tops.int8 == cpu.data["compute"]["accelerator"]["peak_tops"]["int8"]
    assert cpu.peak_ops_per_s("int8") == pytest.approx(1.536e12)
    assert cpu.peak_ops_per_s("uint8") == cpu.peak_ops_per_s("int8")  # uint8 reads the int8 figure
    assert cpu.peak_ops_per_s("FP32") == pytest.approx(0.384e12)  # format aliases
    assert cpu.peak_ops_per_s("int8", unit="host") == cpu.peak_ops_per_s("int8")  # no separate host
    assert cpu.peak_ops_per_s("bf16") is None
    assert not cpu.has_host and cpu.runs_any_op
    assert cpu.supports_op("Einsum") == {}
    assert cpu.allows("uint8", role="activations") and cpu.allows("int8")
    assert not cpu.allows("int16")
    assert cpu.efficiency("Conv") == 0.4
    assert cpu.efficiency("Einsum") == cpu.cost_model.efficiency.default
    assert json.loads(json.dumps(cpu.compute))  # sections stay plain JSON-serialisable dicts


def test_peak_ops_per_s_rejects_unknown_unit():
    with pytest.raises(ValueError):
        load_target("host-cpu").peak_ops_per_s("int8", unit="gpu")


def test_dpu_limits_and_quantization_constraints():
    dpu = load_target("amd-kria-k26-dpu")
    conv = dpu.supports_op("Conv")
    assert conv["kernel_max"] == 16 and conv["stride_max"] == 8
    assert dpu.supports_op("Clip")["clip_ranges"] == [[0, 6]]
    for act in ("Relu", "LeakyRelu", "HardSwish", "HardSigmoid"):
        assert dpu.supports_op(act) is not None
    assert dpu.supports_op("Sigmoid") is None and dpu.host_runs("Sigmoid")
    q = dpu.quantization
    assert q.dtypes == ["int8"] and q.symmetric_only and q.power_of_two_scales and q.granularity == ["per-tensor"]
    assert not dpu.allows("uint8") and not dpu.allows("int16")


def test_ethos_defaults_and_depthwise_overrides_merge():
    psoc = load_target("infineon-psoc-edge-e84")
    conv = psoc.supports_op("Conv")
    assert conv["stride_max"] == 4 and conv["rank_max"] == 4  # rank_max comes from operator_defaults
    assert "depthwise" in conv
    dw = psoc.supports_op("Conv", depthwise=True)
    assert dw["stride_max"] == 3 and "depthwise" not in dw
    assert psoc.allows("int16", role="activations") and not psoc.allows("int16", role="weights")
    assert psoc.peak_ops_per_s("int8") == 2 * 128 * 400e6  # U55-128 at 400 MHz, read from Infineon's compiled model
    assert psoc.host_runs("Gather") and not psoc.host_runs("Einsum")  # TFLM kernels only


# -- local override -------------------------------------------------------------------------------

def test_local_override_is_deep_merged(capsys):
    path = write_override("host-cpu", """
compute:
  accelerator:
    peak_tops: {int8: 0.5}
cost_model:
  efficiency: {Conv: 0.9}
  calibrated: {when: "2026-11-25T08:00:00Z", machine: test}
""")
    cpu = load_target("host-cpu")
    assert cpu.override == path
    assert cpu.peak_ops_per_s("int8") == pytest.approx(0.5e12)
    assert cpu.peak_ops_per_s("float32") == pytest.approx(0.384e12)  # sibling kept
    assert cpu.efficiency("Conv") == 0.9 and cpu.efficiency("MatMul") == 0.45
    assert cpu.runtime.execution_provider == "CPUExecutionProvider"
    code, out, _ = run_cli(capsys, "targets")
    assert code == 0 and "host-cpu *" in out and "local override" in out
    code, out, _ = run_cli(capsys, "targets", "show", "host-cpu")
    assert code == 0 and f"local override merged: {path}" in out
    assert yaml.safe_load(out)["compute"]["accelerator"]["peak_tops"]["int8"] == 0.5


def test_override_null_replaces_a_figure():
    write_override("raspberry-pi-5", "memory: {bandwidth_gb_s: null}\n")
    assert load_target("raspberry-pi-5").memory.bandwidth_gb_s is None


def test_bad_override_is_one_located_error(capsys):
    path = write_override("host-cpu", "compute:\n  accelerator:\n    peak_topps: {int8: 2}\n")
    with pytest.raises(TargetError) as err:
        load_target("host-cpu")
    assert f"{path}:3:5: compute.accelerator.peak_topps: unknown field (did you mean 'peak_tops'?)" in str(err.value)
    code, _, stderr = run_cli(capsys, "targets", "show", "host-cpu")
    assert code == 2 and "Traceback" not in stderr and "peak_topps" in stderr


def test_override_must_cite_new_figures():
    path = write_override("raspberry-pi-5", "memory: {sram_kb: 2048}\n")
    with pytest.raises(TargetError, match=r"memory\.sram_kb: figure has no `sources` entry") as err:
        load_target("raspberry-pi-5")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["compute: [unclosed\n", "- just\n- a list\n", "\x00\x01binary"])
def test_garbage_override_is_a_target_error(text):
    write_override("host-cpu", text)
    with pytest.raises(TargetError):
        load_target("host-cpu")


def test_alias_bomb_and_oversized_overrides_are_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    write_override("host-cpu", bomb)
    with pytest.raises(TargetError, match="alias bomb"):
        load_target("host-cpu")
    write_override("host-cpu", "notes: ['" + "x" * (2 * 1024 * 1024) + "']\n")
    with pytest.raises(TargetError, match="larger than"):
        load_target("host-cpu")
    write_override("host-cpu", "measurable: true\n---\nmeasurable: false\n")
    with pytest.raises(TargetError, match="single document"):
        load_target("host-cpu")


def test_local_only_profile_joins_the_catalog(capsys):
    data = yaml.safe_load((PROFILES_DIR / "raspberry-pi-5.yaml").read_text())
    data["metadata"]["name"] = "lab-board"
    write_override("lab-board", yaml.safe_dump(data))
    assert "lab-board" in target_names()
    assert load_target("lab-board").peak_ops_per_s("int8") == pytest.approx(0.6144e12)
    code, out, _ = run_cli(capsys, "targets")
    assert code == 0 and "lab-board" in out


def test_name_must_match_file():
    data = yaml.safe_load((PROFILES_DIR / "raspberry-pi-5.yaml").read_text())
    write_override("other-board", yaml.safe_dump(data))
    with pytest.raises(TargetError, match="does not match the file name 'other-board'"):
        load_target("other-board")


# -- errors and the CLI ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, hint", [("host-cp", "host-cpu"), ("orin", "nvidia-jetson-orin-nano"), ("ethos-u85", "arm-ethos-u85")])
def test_unknown_target_suggests_nearest(name, hint):
    with pytest.raises(TargetError) as err:
        load_target(name)
    assert f"unknown target {name!r}" in str(err.value) and hint in str(err.value)
    assert err.value.exit_code == 2


def test_targets_table_lists_every_profile(capsys):
    code, out, _ = run_cli(capsys, "targets")
    assert code == 0
    header, *rows = out.strip().splitlines()
    for column in ("NAME", "VENDOR", "ACCELERATOR", "PEAK INT8 TOPS", "MEMORY", "FORMATS", "RUNTIME", "MEASURABLE"):
        assert column in header
    assert {r.split()[0] for r in rows} == set(target_names())
    assert any(r.startswith("host-cpu") and r.rstrip().endswith("yes") for r in rows)


def test_broken_override_does_not_hide_the_catalog(capsys):
    write_override("sima-mlsoc", "chip: {clas: npu}\n")
    code, out, err = run_cli(capsys, "targets")
    assert code == 2
    assert "host-cpu" in out and "sima-mlsoc" not in out
    assert "chip.clas: unknown field (did you mean 'class'?)" in err and "Traceback" not in err


def test_show_keeps_the_file_comments(capsys):
    code, out, _ = run_cli(capsys, "targets", "show", "host-cpu")
    assert code == 0 and "# 2 ops/MAC x 256 MAC/cycle x 3.0 GHz" in out


def test_targets_json(capsys):
    code, out, _ = run_cli(capsys, "targets", "--json")
    records = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(records) == set(target_names())
    assert records["dmatrix-corsair"]["peak_format"] == "mxint8"
    assert records["infineon-psoc-edge-e84"]["peak_int8_tops"] == 0.1024


def test_targets_show_prints_the_profile(capsys):
    code, out, _ = run_cli(capsys, "targets", "show", "amd-kria-k26-dpu")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown == load_target("amd-kria-k26-dpu").data
    code, out, _ = run_cli(capsys, "targets", "show", "amd-kria-k26-dpu", "--json")
    assert json.loads(out) == shown


def test_targets_show_unknown_exits_2_with_suggestion(capsys):
    code, out, err = run_cli(capsys, "targets", "show", "raspberry-pi5")
    assert code == 2 and out == ""
    assert err.strip() == "edgeship: error: unknown target 'raspberry-pi5' (did you mean raspberry-pi-5?; `edgeship targets` lists them)"


def test_console_entry_point(tmp_path):
    env_home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeship", "targets"], capture_output=True, text=True, timeout=120,
        env={"EDGESHIP_HOME": str(env_home), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "host-cpu" in proc.stdout and "arm-ethos-u85" in proc.stdout
