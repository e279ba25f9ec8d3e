"""Smoke-run of bench/ssh_push.py at a tiny size (slow: starts sshd, pushes for real)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ssh_push_benchmark_prints_its_table(capsys):
    from tests.support.require import require_binary

    require_binary("sshd", "/usr/sbin/sshd")
    require_binary("scp")
    path = Path(__file__).resolve().parents[2] / "bench" / "ssh_push.py"
    spec = importlib.util.spec_from_file_location("bench_ssh_push", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--devices", "3", "--size-mb", "0.5", "--parallel", "1", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "edgeship MB/s" in out and len([l for l in out.splitlines() if l.strip().startswith(("1 ", "2 "))]) == 2
