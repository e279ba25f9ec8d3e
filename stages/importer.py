"""Stage `import`: load the ONNX model named by the manifest (external data too), check it, and record
what it is: its digest, opset, producer, inputs and outputs (with their dynamic dims), op counts.

The model file is not copied: `ctx.model_path` points at the source, and the stage key is made from
the digests of the model file and every external-data file beside it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgeship.artifact import sha256_file
from edgeship.errors import BuildError
from edgeship.stages.base import BaseStage
from edgeship.stages.onnx_util import dims_of, dtype_name, graph_inputs, load_model
from edgeship.stages.registry import register


def external_data_files(model_path: Path) -> list[Path]:
    """The external-data files a model references (without loading the weights)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(model_path), load_external_data=False)
    found: set[str] = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    found.add(entry.value)
    files = []
    for rel in sorted(found):
        path = (model_path.parent / rel).resolve()
        if not path.is_relative_to(model_path.parent.resolve()):
            raise BuildError(f"{model_path}: external data {rel!r} points outside the model's folder", stage="import")
        if not path.is_file():
            raise BuildError(f"{model_path}: external data file {rel!r} is missing (it must sit beside the model)", stage="import")
        files.append(path)
    return files


@register
class ImportStage(BaseStage):
    name = "import"
    version = "1"

    def _source(self, ctx) -> Path:
        rel = ctx.setting("model", "path")
        if not rel:
            file, line, col = ctx.where("model")
            raise BuildError(f"{file}:{line}:{col}: model.path: missing", stage=self.name)
        path = ctx.resolve(rel)
        if not path.is_file():
            file, line, col = ctx.where("model", "path")
            raise BuildError(f"{file}:{line}:{col}: model.path: {path} not found", stage=self.name)
        return path

    def input_digests(self, ctx) -> dict:
        path = self._source(ctx)
        digests = {"model": ctx.file_digest("source_model", path)}
        try:
            for extra in external_data_files(path):
                digests[f"external:{extra.name}"] = sha256_file(extra)
        except BuildError:
            raise
        except Exception as err:  # protobuf decode errors and the like: the file is not ONNX
            raise BuildError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})", stage=self.name) from None
        return digests

    def run(self, ctx):
        import onnx

        path = self._source(ctx)
        model = load_model(path, stage=self.name)
        try:
            onnx.checker.check_model(str(path), full_check=False)
        except Exception as err:
            raise BuildError(f"{path}: invalid ONNX model: {str(err).splitlines()[0]}", stage=self.name) from None
        graph = model.graph
        inputs = {}
        for vi in graph_inputs(model):
            inputs[vi.name] = {"shape": dims_of(vi), "dtype": dtype_name(vi)}
        outputs = {vi.name: {"shape": dims_of(vi), "dtype": dtype_name(vi)} for vi in graph.output}
        opsets = {(op.domain or "ai.onnx"): op.version for op in model.opset_import}
        ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.node)
        params = sum(int(_numel(t.dims)) for t in graph.initializer)
        external = external_data_files(path)
        ctx.model_path = path
        ctx.inputs = inputs
        ctx.outputs = outputs
        ctx.digests["source_model"] = ctx.file_digest("source_model", path)
        ctx.report[self.name] = {
            "path": str(path),
            "sha256": ctx.digests["source_model"],
            "size_bytes": path.stat().st_size + sum(p.stat().st_size for p in external),
            "external_data": [p.name for p in external],
            "ir_version": model.ir_version,
            "opsets": opsets,
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "inputs": inputs,
            "outputs": outputs,
            "nodes": len(graph.node),
            "parameters": params,
            "op_types": dict(sorted(ops.items())),
        }
        return ctx


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n
