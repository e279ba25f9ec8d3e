"""Toolchain environments and the worker contract, for real: a virtualenv made with python -m venv,
a worker run in it as a subprocess, files in and out, failures as one line naming the toolchain."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgeship.errors import ToolchainError
from edgeship.targets.toolchains import contract
from edgeship.targets.toolchains.env import MARKER, ToolchainEnv, root
from edgeship.targets.toolchains.interpreter import find_python
from edgeship.targets.toolchains.runner import run_worker

from .conftest import ECHO


def _request(tmp_path: Path, **options) -> tuple[dict, Path]:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model")
    out = tmp_path / "out"
    return contract.request("echo", "lower", str(out), model=str(model), target={"name": "t", "platform": "p1"},
                            options=options), out


def test_install_makes_a_venv_keyed_by_the_requirement_set(echo):
    env = ToolchainEnv(echo)
    assert env.installed
    assert env.path == root() / f"echo-{echo.key()}"
    record = json.loads((env.path / MARKER).read_text())
    assert record["python"] == "%d.%d" % sys.version_info[:2]
    assert record["size_bytes"] > 0 and record["install_seconds"] >= 0
    assert (env.path / "pyvenv.cfg").is_file()
    assert replace(echo, requirements=("six==1.16.0",)).key() != echo.key()
    assert replace(echo, description="other words").key() == echo.key()


def test_install_streams_progress_and_is_a_no_op_when_installed(echo):
    lines: list[str] = []
    before = ToolchainEnv(echo).record()
    assert ToolchainEnv(echo).install(progress=lines.append) == before
    assert lines == []  # nothing to do


def test_worker_round_trip_streams_its_log(echo, tmp_path):
    request, out = _request(tmp_path)
    lines: list[str] = []
    response = run_worker(echo, request, out, log=lines.append, timeout=120)
    assert [line for line in lines if line.startswith("step")] == ["step 0", "step 1", "step 2"]
    assert response["files"] == {"echo.bin": "echo.bin"}
    assert (out / "echo.bin").read_bytes() == b"not really a model"
    assert response["runtime"] == "echo-runtime" and response["report"]["platform"] == "p1"
    assert response["versions"]["echo"] == "1.0" and response["versions"]["python"]
    assert "step 2" in Path(response["log"]).read_text()


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    assert text.startswith("lower: toolchain echo: "), text
    return text


def test_worker_failure_is_one_line_naming_the_toolchain(echo, tmp_path):
    request, out = _request(tmp_path, fail="op Foo is not supported")
    with pytest.raises(ToolchainError) as err:
        run_worker(echo, request, out, timeout=120)
    text = _one_line(err)
    assert "op Foo is not supported [toolkit]" in text and f"log: {out / 'echo.log'}" in text


def test_vendor_exception_keeps_its_first_line_and_the_traceback_in_the_log(echo, tmp_path):
    request, out = _request(tmp_path, **{"raise": "vendor says no"})
    with pytest.raises(ToolchainError) as err:
        run_worker(echo, request, out, timeout=120)
    assert "vendor says no [ValueError]" in _one_line(err)
    assert "Traceback" in (out / "echo.log").read_text()


def test_time_limit_stops_the_worker(echo, tmp_path):
    request, out = _request(tmp_path, sleep=120)
    with pytest.raises(ToolchainError) as err:
        run_worker(echo, request, out, timeout=3)
    assert "3 s time limit" in _one_line(err)
    pid = int((out / "worker.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("option, says", [
    ("crash", "worker exited 3 without a response"),
    ("bad_response", f"breaks {contract.CONTRACT}"),
    ("escape", "not a file in"),
], ids=["crash-without-response", "response-breaks-contract", "file-outside-outdir"])
def test_a_bad_worker_ending_is_refused(echo, tmp_path, option, says):
    request, out = _request(tmp_path, **{option: True})
    with pytest.raises(ToolchainError) as err:
        run_worker(echo, request, out, timeout=120)
    assert says in _one_line(err)


def test_the_worker_refuses_another_contract_version(echo, tmp_path):
    request, out = _request(tmp_path)
    request["contract"] = "edgeship.toolchain/v0"
    with pytest.raises(ToolchainError) as err:
        run_worker(echo, request, out, timeout=120)
    assert "is not 'edgeship.toolchain/v1'" in _one_line(err)


def test_not_installed_names_the_exact_command(echo, tmp_path):
    other = replace(echo, name="echo2")
    request, out = _request(tmp_path)
    with pytest.raises(ToolchainError) as err:
        run_worker(other, request, out)
    assert "run `edgeship toolchain install echo2`" in str(err.value)


def test_no_matching_interpreter_is_a_clear_error():
    with pytest.raises(ToolchainError) as err:
        find_python(replace(ECHO, python="2.6"))
    assert "needs CPython 2.6" in str(err.value) and "EDGESHIP_TOOLCHAIN_PYTHON" in str(err.value)


def test_a_failed_install_is_one_line_and_leaves_nothing_installed(echo_root, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESHIP_TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    broken = replace(ECHO, name="broken", requirements=(str(tmp_path / "no-such-package-dir"),))
    lines: list[str] = []
    with pytest.raises(ToolchainError) as err:
        ToolchainEnv(broken).install(progress=lines.append)
    text = str(err.value)
    assert "\n" not in text and text.startswith("toolchain broken: install failed at `python -m pip install")
    assert "edgeship toolchain install broken --force" in text
    assert any("creating virtualenv" in line for line in lines)
    assert not ToolchainEnv(broken).installed


def test_remove_deletes_the_environment_and_stale_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESHIP_TOOLCHAIN_CACHE", str(tmp_path))
    small = replace(ECHO, name="small")
    stale = tmp_path / "small-0123456789ab"
    stale.mkdir()
    env = ToolchainEnv(small)
    env.install()
    assert env.stale() == [stale]
    assert sorted(env.remove()) == sorted([env.path, stale])
    assert not env.installed and not stale.exists()


def test_contract_request_and_response_schemas():
    doc = contract.request("rknn", "lower", "/tmp/out", model="/m.onnx", float_model=None)
    assert doc == {"contract": contract.CONTRACT, "toolchain": "rknn", "action": "lower", "outdir": "/tmp/out", "model": "/m.onnx"}
    assert contract.response_problems({"contract": contract.CONTRACT, "ok": True, "files": {"a": "a"}}) == []
    assert contract.response_problems({"contract": "edgeship.toolchain/v2", "ok": True})
    assert contract.response_problems({"contract": contract.CONTRACT, "ok": False, "error": {"kind": "x"}})


def test_a_silent_step_gets_still_working_lines(tmp_path):
    """pip prints nothing while it downloads a big wheel: the install's progress must not go quiet."""
    from edgeship.targets.toolchains.process import stream

    flag = tmp_path / "go"
    child = ("import os, sys, time\nprint('downloading big.whl', flush=True)\n"
             f"for _ in range(600):\n    if os.path.exists({str(flag)!r}): print('done'); sys.exit(0)\n    time.sleep(0.1)\n"
             "sys.exit(5)")
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line.startswith("... still working"):
            flag.touch()  # the child finishes once it has been reported alive

    done = stream([sys.executable, "-c", child], on_line, timeout=120, heartbeat_s=0.2)
    assert done.returncode == 0, lines
    assert lines[0] == "downloading big.whl" and lines[-1] == "done"
    assert any(line.startswith("... still working (") and line.endswith("downloading big.whl") for line in lines)
