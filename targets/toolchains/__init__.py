"""Vendor toolchain environments: each vendor SDK in its own virtualenv, driven through a JSON contract.

- spec: what a toolchain declares (requirements, Python versions, worker)
- interpreter: finding a CPython the toolchain accepts
- env: creating, inspecting and removing environments under the cache root
- runner: running a worker with a request/response, streamed log, time limit, one-line errors
- contract: the versioned JSON request/response schemas
- registry: which toolchains exist (built-in backends' and the `edgeship.toolchains` entry points)
"""

from edgeship.targets.toolchains.spec import Toolchain

__all__ = ["Toolchain"]
