"""Power-of-two scales: every Q/DQ scale becomes 2^k and the model still computes nearly the same."""

import numpy as np
import onnx

from edgeship.pipelines import metrics
from edgeship.stages import quant_measure, quant_ort, quant_pow2
from edgeship.stages.quant_policy import QuantPolicy


def test_is_power_of_two():
    assert quant_pow2.is_power_of_two([0.5, 0.125, 4.0])
    assert not quant_pow2.is_power_of_two([0.3])
    assert not quant_pow2.is_power_of_two([0.0])


def test_power_of_two_rewrite_keeps_outputs_close(examples_dir, tmp_path):
    ex = examples_dir["fraud"]
    src = ex / "models" / "fraud-mlp.onnx"
    calib = dict(np.load(ex / "data" / "calib.npz"))
    policy = QuantPolicy(mode="static", weight_symmetric=True, activation_symmetric=True, per_channel=False)
    qdq = tmp_path / "qdq.onnx"
    scaler = ["/scale/sub", "/scale/mul"]  # raw amounts span 4 decades: the scaler stays float
    quant_ort.quantize_static_qdq(src, qdq, policy, calib, tmp_path / "cache.json", scaler, per_channel=False)
    model = onnx.load(str(qdq))
    assert quant_pow2.non_power_of_two_scales(model)  # onnxruntime picks arbitrary scales
    counts = quant_pow2.to_power_of_two(model)
    assert counts["weights"] >= 3 and counts["biases"] >= 3 and counts["activation_scales"] >= 3
    assert quant_pow2.non_power_of_two_scales(model) == []
    onnx.checker.check_model(model)
    out = tmp_path / "pow2.onnx"
    onnx.save(model, str(out))
    evaluation = {k: v[:100] for k, v in np.load(ex / "data" / "eval.npz").items() if not k.startswith("_")}
    ref = quant_measure.run_all(quant_measure.session(src), evaluation)[0]
    got = quant_measure.run_all(quant_measure.session(out), evaluation)[0]
    assert metrics.cosine(ref, got) > 0.99 and metrics.top1_agreement(ref, got) >= 0.99


def test_bias_scale_is_product_of_input_and_weight_scales(examples_dir, tmp_path):
    ex = examples_dir["kws"]
    calib = {k: v[:16] for k, v in np.load(ex / "data" / "calib.npz").items()}
    policy = QuantPolicy(mode="static", weight_symmetric=True, activation_symmetric=True, per_channel=True)
    qdq, pre = tmp_path / "qdq.onnx", tmp_path / "pre.onnx"
    quant_ort.preprocess(ex / "models" / "kws.onnx", pre)  # folds BatchNorm: Conv gets a bias
    quant_ort.quantize_static_qdq(pre, qdq, policy, calib, tmp_path / "c.json", [], True)
    model = onnx.load(str(qdq))
    quant_pow2.to_power_of_two(model)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    checked = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] in producers:
            s_in = inits[producers[node.input[0]].input[1]]
            s_w = inits[producers[node.input[1]].input[1]]
            s_b = inits[producers[node.input[2]].input[1]]
            np.testing.assert_allclose(s_b, s_in * s_w, rtol=1e-6)
            checked += 1
    assert checked >= 3
