"""examples/ci/edgeship.yml: the workflow parses, has its pull-request and merge paths, and every
`edgeship` command it runs exists with the flags it passes (parsed by the real argument parser)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from edgeship.cli import build_parser

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "ci" / "edgeship.yml"
SHELL_BREAKS = {">", ">>", "|", "||", "&&", ";", "2>", "<"}


def edgeship_commands(workflow: dict) -> list[list[str]]:
    commands = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                if not line.strip().startswith("edgeship "):
                    continue  # other shell lines (jq, gh, a continued string) are no edgeship command
                words = shlex.split(line, comments=True)
                while "edgeship" in words:
                    words = words[words.index("edgeship") + 1:]
                    cut = next((i for i, w in enumerate(words) if w in SHELL_BREAKS), len(words))
                    commands.append(words[:cut])
                    words = words[cut:]
    return commands


def test_workflow_parses_and_covers_pr_and_merge():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on:` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    assert workflow["jobs"]["apply"]["needs"] == "check"
    assert "pull_request" not in workflow["jobs"]["apply"]["if"] and "push" in workflow["jobs"]["apply"]["if"]


def test_every_edgeship_command_in_the_workflow_exists():
    commands = edgeship_commands(yaml.safe_load(WORKFLOW.read_text()))
    verbs = {c[0] for c in commands}
    assert {"validate", "build", "plan", "apply"} <= verbs, verbs
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the workflow runs `edgeship {' '.join(argv)}`, which the CLI rejects")
        assert getattr(args, "func", None), argv
    plan = next(c for c in commands if c[0] == "plan")
    assert plan[plan.index("-o") + 1] == "json"  # the plan posted on the pull request is the JSON document
