"""The runtimes a device agent runs releases with: the name a bundle gives (bundle.json `runtime`), the
distributions that provide it on a device, and how it gets there.

One table, so the smoke test, `fleet wheelhouse` and `fleet bootstrap` agree on what a board needs to
run a target's artifacts (an Intel board needs OpenVINO, a Raspberry Pi LiteRT, a Rockchip board
Rockchip's own wheel).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    name: str  # as bundle.json says it
    distributions: tuple[str, ...]  # any one of them provides it on a device
    extra: str | None  # the edgeship extra that installs it (None: a vendor wheel installed on the board)
    install: str  # the line an operator runs on the device

    def installed_in(self, versions: dict[str, str]) -> bool:
        """Whether a device's reported distributions (device_info's `runtimes`) include this runtime."""
        return any(d in versions for d in self.distributions)


RUNTIMES = {r.name: r for r in (
    Runtime("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), "agent", "pip install 'edgeship[agent]'"),
    Runtime("litert", ("ai-edge-litert",), "litert", "pip install 'edgeship[agent,litert]'"),
    Runtime("rknn-toolkit-lite2", ("rknn-toolkit-lite2",), None,
            "pip install rknn-toolkit-lite2 on the board (Rockchip's aarch64 wheel, with the rknpu driver)"),
    Runtime("openvino", ("openvino",), "openvino-runtime", "pip install 'edgeship[agent,openvino-runtime]'"),
)}


def extras_for(runtimes) -> str:
    """The edgeship extras a wheelhouse needs for boards running `runtimes`: always the agent's own,
    plus each runtime's extra (vendor wheels are not extras: bootstrap notes them instead)."""
    extras = {"agent"} | {RUNTIMES[r].extra for r in runtimes if r in RUNTIMES and RUNTIMES[r].extra}
    return ",".join(["agent", *sorted(extras - {"agent"})])
