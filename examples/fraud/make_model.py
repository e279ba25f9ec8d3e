#!/usr/bin/env python3
"""Real-time fraud detection example: a tabular MLP scoring one transaction [1, 30] -> 2 logits.

30 features like the public card-transaction datasets (28 anonymised components, amount, time of day),
standardised inside the graph (Sub/Mul: what an exporter of a sklearn pipeline produces), then
Gemm-Relu 64 -> Gemm-Relu 32 -> Gemm 2 (legit, fraud). Hidden layers are seeded random, the output
layer is fitted in closed form on synthetic transactions (fraud drawn from a shifted, correlated
distribution), so the model really ranks fraud above legit. Deterministic, no downloads.

    python examples/fraud/make_model.py                # models/fraud-mlp.onnx, data/calib.npz, data/eval.npz
    python examples/fraud/make_model.py --variant v2   # models/fraud-mlp-v2.onnx: only the output layer differs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
FEATURES, H1, H2, CLASSES = 30, 64, 32, 2


def transactions(n: int, seed: int, fraud_rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 30) float32 features in raw units, and labels (1 = fraud)."""
    world = np.random.default_rng(4242)  # fixed: the fraud pattern is the same in every split
    direction = world.normal(0, 1, FEATURES - 2)
    mixing = world.normal(0, 0.3, (FEATURES - 2, FEATURES - 2))
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < fraud_rate).astype(np.int64)
    comps = rng.normal(0, 1, (n, FEATURES - 2))
    comps = comps + labels[:, None] * (1.2 * direction + comps @ mixing)
    amount = np.where(labels == 1, rng.lognormal(5.0, 1.0, n), rng.lognormal(3.5, 1.0, n))
    hour = np.where(labels == 1, rng.normal(3, 2, n) % 24, rng.normal(14, 4, n) % 24)
    x = np.concatenate([comps, amount[:, None], hour[:, None]], axis=1)
    return x[:, None].astype(np.float32), labels


def layers(rng, mean, std):
    w1 = rng.normal(0, np.sqrt(2 / FEATURES), (FEATURES, H1)).astype(np.float32)
    b1 = rng.normal(0, 0.1, H1).astype(np.float32)
    w2 = rng.normal(0, np.sqrt(2 / H1), (H1, H2)).astype(np.float32)
    b2 = rng.normal(0, 0.1, H2).astype(np.float32)
    return [("mean", mean), ("inv_std", 1.0 / std), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]


def hidden(params: dict, x: np.ndarray) -> np.ndarray:
    z = (x.reshape(len(x), -1) - params["mean"]) * params["inv_std"]
    h = np.maximum(z @ params["w1"] + params["b1"], 0)
    return np.maximum(h @ params["w2"] + params["b2"], 0)


def build(variant: str = "v1") -> onnx.ModelProto:
    train_x, train_y = transactions(4000, seed=1)
    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    mean, std = flat.mean(0).astype(np.float32), (flat.std(0) + 1e-6).astype(np.float32)
    params = dict(layers(np.random.default_rng(8), mean, std))
    h = hidden(params, train_x).astype(np.float64)
    xb = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    target = np.eye(CLASSES)[train_y] * 6.0 - 3.0
    weight = np.where(train_y == 1, 4.0 if variant == "v1" else 6.0, 1.0)[:, None]  # fraud is rare: weigh it up
    ridge = 1.0 if variant == "v1" else 4.0
    sol = np.linalg.solve(xb.T @ (weight * xb) + ridge * np.eye(xb.shape[1]), xb.T @ (weight * target))
    params["w3"], params["b3"] = sol[:-1].astype(np.float32), sol[-1].astype(np.float32)

    inits = [numpy_helper.from_array(v, f"/{k}") for k, v in params.items()]
    nodes = [
        helper.make_node("Sub", ["features", "/mean"], ["/scale/centered"], name="/scale/sub"),
        helper.make_node("Mul", ["/scale/centered", "/inv_std"], ["/scale/out"], name="/scale/mul"),
        helper.make_node("Gemm", ["/scale/out", "/w1", "/b1"], ["/fc1/out"], name="/fc1/gemm"),
        helper.make_node("Relu", ["/fc1/out"], ["/fc1/relu_out"], name="/fc1/relu"),
        helper.make_node("Gemm", ["/fc1/relu_out", "/w2", "/b2"], ["/fc2/out"], name="/fc2/gemm"),
        helper.make_node("Relu", ["/fc2/out"], ["/fc2/relu_out"], name="/fc2/relu"),
        helper.make_node("Gemm", ["/fc2/relu_out", "/w3", "/b3"], ["scores"], name="/head/gemm"),
    ]
    graph = helper.make_graph(
        nodes, "fraud_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, FEATURES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeship-examples")
    model.ir_version = 8
    model.doc_string = f"edgeship example: fraud scoring MLP ({variant}); outputs [legit, fraud] logits"
    onnx.checker.check_model(model)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["v1", "v2"], default="v1", help="v2: only the output layer differs")
    parser.add_argument("--out", type=Path, default=HERE, help="example folder (models/ and data/ go under it)")
    args = parser.parse_args(argv)
    model = build(args.variant)
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    name = "fraud-mlp.onnx" if args.variant == "v1" else "fraud-mlp-v2.onnx"
    onnx.save(model, args.out / "models" / name)
    if args.variant == "v1":
        calib_x, _ = transactions(256, seed=3)
        eval_x, eval_y = transactions(500, seed=4)
        np.savez(args.out / "data" / "calib.npz", features=calib_x)
        np.savez(args.out / "data" / "eval.npz", features=eval_x, _labels=eval_y)
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        pred = np.array([sess.run(None, {"features": s})[0][0].argmax() for s in eval_x])
        recall = float(np.mean(pred[eval_y == 1] == 1))
        precision = float(np.mean(eval_y[pred == 1] == 1)) if (pred == 1).any() else 0.0
        print(f"fraud: float recall {recall:.3f}, precision {precision:.3f} on eval.npz")
    print(f"wrote {args.out / 'models' / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
