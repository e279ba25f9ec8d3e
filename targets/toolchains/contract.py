"""The versioned JSON contract between edgeship and a toolchain worker.

edgeship writes `request.json`, runs the worker in the toolchain's environment, and reads
`response.json`. Everything crosses as files (models, sample inputs, outputs) named by absolute path
in the request or relative to `outdir` in the response, so the worker never imports edgeship and
edgeship never imports the vendor SDK. A worker refuses a request whose `contract` it does not know;
edgeship refuses a response whose `contract` differs from the request's.
"""

from __future__ import annotations

from typing import Any

import jsonschema

CONTRACT = "edgeship.toolchain/v1"

REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgeship toolchain request v1",
    "type": "object",
    "additionalProperties": False,
    "required": ["contract", "toolchain", "action", "outdir"],
    "properties": {
        "contract": {"const": CONTRACT},
        "toolchain": {"type": "string", "minLength": 1},
        "action": {"enum": ["lower", "probe"],
                   "description": "lower: compile `model` into `outdir`; probe: report versions only (doctor)."},
        "model": {"type": ["string", "null"], "description": "Absolute path of the quantized (QDQ) ONNX to lower."},
        "float_model": {"type": ["string", "null"], "description": "Absolute path of the float reference ONNX."},
        "samples": {"type": ["string", "null"],
                    "description": "Absolute path of an .npz: input name -> (N, *shape) arrays, for validation "
                                   "and (when the toolchain quantizes) calibration."},
        "target": {"type": "object", "description": "The target profile's name and the backend's chip identifier.",
                   "properties": {"name": {"type": "string"}, "platform": {"type": ["string", "null"]}}},
        "options": {"type": "object", "description": "The profile's backend options, passed through."},
        "outdir": {"type": "string", "description": "Absolute folder the worker writes its files into."},
    },
}

RESPONSE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgeship toolchain response v1",
    "type": "object",
    "additionalProperties": False,
    "required": ["contract", "ok"],
    "properties": {
        "contract": {"const": CONTRACT},
        "ok": {"type": "boolean"},
        "files": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "Artifact file name -> path relative to outdir."},
        "runtime": {"type": ["string", "null"], "description": "The runtime that runs the files on the device."},
        "report": {"type": "object", "description": "The vendor's report (see docs/backends.md)."},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "error": {"type": ["object", "null"], "required": ["kind", "message"],
                  "properties": {"kind": {"type": "string"}, "message": {"type": "string"}}},
    },
}


def request(toolchain: str, action: str, outdir: str, **fields: Any) -> dict[str, Any]:
    """A validated request document (None-valued fields are dropped)."""
    doc = {"contract": CONTRACT, "toolchain": toolchain, "action": action, "outdir": outdir}
    doc.update({k: v for k, v in fields.items() if v is not None})
    jsonschema.validate(doc, REQUEST_SCHEMA)
    return doc


def response_problems(doc: Any) -> list[str]:
    """Why a response does not follow the contract (empty when it does)."""
    validator = jsonschema.Draft202012Validator(RESPONSE_SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<response>'}: {e.message}" for e in validator.iter_errors(doc)]
