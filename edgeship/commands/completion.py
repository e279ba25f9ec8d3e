"""`edgeship completion bash|zsh|fish`: print a shell completion script.

The script (argcomplete's) asks `edgeship` itself for the candidates, so completion follows the
argparse tree of whatever commands are installed, with no list to keep in step by hand:

    edgeship completion bash > ~/.local/share/bash-completion/completions/edgeship
    edgeship completion zsh > "${fpath[1]}/_edgeship"
    edgeship completion fish > ~/.config/fish/completions/edgeship.fish
"""

from __future__ import annotations

import sys

SHELLS = ("bash", "zsh", "fish")


def register(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, fish)",
                       description="Print the completion script for SHELL on stdout; see docs/completion.md for where "
                                   "to put it.")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=cmd_completion)


def script(shell: str, prog: str = "edgeship") -> str:
    import argcomplete

    return argcomplete.shellcode([prog], shell=shell)


def cmd_completion(args) -> int:
    sys.stdout.write(script(args.shell))
    return 0
