"""quant_ort: calibration bounds, the pre-processing fallback, the strided reader."""

import numpy as np
import onnx
import onnxruntime.quantization as ortq

from edgeship.stages import quant_ort


def test_histogram_calibration_is_capped_by_activation_memory(examples_dir, monkeypatch):
    model = examples_dir["kws"] / "models" / "kws.onnx"
    data = dict(np.load(examples_dir["kws"] / "data" / "calib.npz"))
    per_sample = quant_ort.activation_bytes_per_sample(model)
    assert per_sample > 0
    monkeypatch.setattr(quant_ort, "HISTOGRAM_MEMORY_BYTES", per_sample * 10)
    chosen, facts = quant_ort.bounded_calibration(data, "entropy", 200, model)
    assert facts["used"] == 10 and "memory_capped" in facts
    chosen, facts = quant_ort.bounded_calibration(data, "minmax", 50, model)
    assert facts["used"] == 50 and "memory_capped" not in facts


def test_preprocess_falls_back_when_symbolic_shape_inference_asserts(examples_dir, tmp_path, monkeypatch):
    # fault injection: the assertion onnxruntime's symbolic shape inference raises on some real exports
    real = ortq.quant_pre_process
    calls = []

    def flaky(src, dst, **kwargs):
        calls.append(kwargs)
        if not kwargs.get("skip_symbolic_shape"):
            raise AssertionError("symbolic shape inference: Concat axis")
        return real(src, dst, **kwargs)

    monkeypatch.setattr(quant_ort, "quant_pre_process", flaky)
    out = tmp_path / "pre.onnx"
    how = quant_ort.preprocess(examples_dir["fraud"] / "models" / "fraud-mlp.onnx", out)
    assert "symbolic shape inference failed" in how and len(calls) == 2
    onnx.checker.check_model(str(out))

    monkeypatch.setattr(quant_ort, "quant_pre_process", lambda *a, **k: (_ for _ in ()).throw(AssertionError("x")))
    how = quant_ort.preprocess(examples_dir["fraud"] / "models" / "fraud-mlp.onnx", out)
    assert how.startswith("skipped") and out.read_bytes() == (examples_dir["fraud"] / "models" / "fraud-mlp.onnx").read_bytes()


def test_array_reader_supports_strided_ranges():
    reader = quant_ort.ArrayReader({"x": np.arange(6, dtype=np.float32).reshape(6, 1)})
    reader.set_range(2, 4)
    got = []
    while (feed := reader.get_next()) is not None:
        got.append(float(feed["x"][0]))
    assert got == [2.0, 3.0] and len(reader) == 6
    assert quant_ort._stride(48) == 16 and quant_ort._stride(50) == 10 and quant_ort._stride(8) is None
