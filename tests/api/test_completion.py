"""`edgeship completion bash|zsh|fish`: each script is valid in its shell (the shell's own syntax check),
and the candidates it asks edgeship for come from the real argparse tree."""

from __future__ import annotations

import subprocess

import pytest

from edgeship.cli import main
from tests.support.require import require_binary

SYNTAX_CHECK = {"bash": ["-n"], "zsh": ["-n"], "fish": ["--no-execute"]}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_valid_in_its_shell(shell, tmp_path, capsys):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "edgeship" in script
    path = tmp_path / f"edgeship.{shell}"
    path.write_text(script)
    binary = require_binary(shell)
    done = subprocess.run([binary, *SYNTAX_CHECK[shell], str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _candidates(line: str) -> list[str]:
    """What the completion scripts receive: the real `edgeship` asked over argcomplete's protocol
    (candidates on fd 8), in a child process as the shells run it."""
    import os
    import sys

    read, write = os.pipe()

    def fds():
        os.dup2(write, 8)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 9)

    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line, "COMP_POINT": str(len(line))}
    try:
        child = subprocess.Popen([sys.executable, "-m", "edgeship"], env=env, preexec_fn=fds, close_fds=False,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(write)
        with os.fdopen(read) as out:
            text = out.read()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return [c.strip() for c in text.split("\n") if c.strip()]


def test_completion_candidates_follow_the_argparse_tree():
    assert {"rollout", "reconcile"} <= set(_candidates("edgeship r"))
    assert {"list", "status", "history", "rollback"} <= set(_candidates("edgeship rollout "))
    assert {"bash", "zsh", "fish"} <= set(_candidates("edgeship completion "))
    assert {"text", "json", "ndjson"} <= set(_candidates("edgeship apply x.yaml -o "))
