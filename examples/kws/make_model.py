#!/usr/bin/env python3
"""Keyword spotting example: a small DS-CNN on MFCC frames [1, 49, 10] -> 12 keyword logits.

Made in code, deterministically (same bytes on every run, no downloads): the convolutional trunk
has seeded random weights with non-trivial BatchNorms (so the optimize stage has something to fold),
and the classifier head is fitted in closed form (ridge regression) on synthetic keyword "recordings"
(a smooth MFCC template per keyword, time-shifted, scaled and noised). So the model really separates
the classes in the evaluation data, and `_labels` in eval.npz gives its accuracy.

    python examples/kws/make_model.py                 # models/kws.onnx, data/calib.npz, data/eval.npz
    python examples/kws/make_model.py --variant v2    # models/kws-v2.onnx: only the head's weights differ
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
FRAMES, COEFFS, CLASSES, WIDTH = 49, 10, 12, 64
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_silence_", "_unknown_"]


class Graph:
    """Tiny builder: named nodes and initializers, so node names read like an exporter's ("/block1/dw")."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def conv_bn_relu(g: Graph, rng, x, name, cin, cout, kernel, stride=(1, 1), group=1):
    fan_in = (cin // group) * kernel[0] * kernel[1]
    w = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, *kernel)).astype(np.float32)
    pads = [kernel[0] // 2, kernel[1] // 2, (kernel[0] - 1) // 2, (kernel[1] - 1) // 2]
    y = g.node("Conv", [x, g.const(f"{name}.weight", w)], f"{name}/conv",
               kernel_shape=list(kernel), strides=list(stride), pads=pads, group=group)
    scale = rng.uniform(0.8, 1.2, cout).astype(np.float32)
    bias = rng.normal(0, 0.1, cout).astype(np.float32)
    mean = rng.normal(0, 0.1, cout).astype(np.float32)
    var = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    y = g.node("BatchNormalization", [y, g.const(f"{name}.bn.scale", scale), g.const(f"{name}.bn.bias", bias),
                                      g.const(f"{name}.bn.mean", mean), g.const(f"{name}.bn.var", var)],
               f"{name}/bn", epsilon=1e-5)
    return g.node("Relu", [y], f"{name}/relu")


def trunk(rng) -> tuple[Graph, str]:
    """Everything but the head: the part whose weights stay fixed across variants."""
    g = Graph()
    x = g.node("Reshape", ["audio", g.const("/reshape.shape", np.array([1, 1, FRAMES, COEFFS], np.int64))], "/reshape")
    x = conv_bn_relu(g, rng, x, "/stem", 1, WIDTH, (10, 4), stride=(2, 2))
    for i in (1, 2, 3):
        x = conv_bn_relu(g, rng, x, f"/block{i}/dw", WIDTH, WIDTH, (3, 3), group=WIDTH)
        x = conv_bn_relu(g, rng, x, f"/block{i}/pw", WIDTH, WIDTH, (1, 1))
    x = g.node("GlobalAveragePool", [x], "/pool")
    x = g.node("Flatten", [x], "/flatten", axis=1)
    return g, x


def to_model(g: Graph, out_name: str, out_dim: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes, "kws_dscnn",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, FRAMES, COEFFS])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, out_dim])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeship-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def keyword_recordings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MFCC frames: a smooth template per keyword, randomly shifted in time, scaled, noised."""
    templates_rng = np.random.default_rng(1234)  # the "language": same templates for every split
    t = np.linspace(0, 1, FRAMES)[:, None]
    k = np.arange(COEFFS)[None, :]
    templates = []
    for _ in range(CLASSES):
        a, f, p = templates_rng.normal(0, 1.5, COEFFS), templates_rng.uniform(1, 4, COEFFS), templates_rng.uniform(0, 6, COEFFS)
        env = np.exp(-((t - templates_rng.uniform(0.3, 0.7)) ** 2) / 0.05)
        templates.append(env * a[None, :] * np.sin(2 * np.pi * f[None, :] * t + p[None, :]) + 0.2 * k / COEFFS)
    templates = np.stack(templates)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    shifts = rng.integers(-6, 7, n)
    gains = rng.uniform(0.7, 1.3, n)
    x = np.stack([np.roll(templates[c], s, axis=0) * g for c, s, g in zip(labels, shifts, gains)])
    x = x + rng.normal(0, 0.35, x.shape)
    return x[:, None].astype(np.float32), labels.astype(np.int64)  # (N, 1, 49, 10)


def fit_head(features: np.ndarray, labels: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression to one-hot targets: the head a short training run would give."""
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
    y = np.eye(CLASSES)[labels] * 8.0 - 4.0
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    return w[:-1].astype(np.float32), w[-1].astype(np.float32)


def run(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: s})[0] for s in batch])


def build(variant: str = "v1") -> tuple[onnx.ModelProto, dict]:
    g, feat = trunk(np.random.default_rng(7))
    features_model = to_model(g, feat, WIDTH)
    train_x, train_y = keyword_recordings(600, seed=11 if variant == "v1" else 12)
    features = run(features_model, train_x)
    w, b = fit_head(features, train_y, ridge=1.0 if variant == "v1" else 3.0)
    g, feat = trunk(np.random.default_rng(7))
    g.nodes.append(helper.make_node("Gemm", [feat, g.const("/head/fc.weight", w), g.const("/head/fc.bias", b)],
                                    ["logits"], name="/head/fc"))
    model = to_model(g, "logits", CLASSES)
    model.doc_string = f"edgeship example: keyword spotting DS-CNN ({variant}); classes: {','.join(KEYWORDS)}"
    return model, {"train_x": train_x, "train_y": train_y}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["v1", "v2"], default="v1", help="v2: only the head's weights differ")
    parser.add_argument("--out", type=Path, default=HERE, help="example folder (models/ and data/ go under it)")
    args = parser.parse_args(argv)
    model, _ = build(args.variant)
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    name = "kws.onnx" if args.variant == "v1" else "kws-v2.onnx"
    onnx.save(model, args.out / "models" / name)
    if args.variant == "v1":
        calib_x, _ = keyword_recordings(200, seed=21)
        eval_x, eval_y = keyword_recordings(200, seed=31)
        np.savez(args.out / "data" / "calib.npz", audio=calib_x)
        np.savez(args.out / "data" / "eval.npz", audio=eval_x, _labels=eval_y)
        acc = float(np.mean(run(model, eval_x).argmax(-1) == eval_y))
        print(f"kws: float accuracy on eval.npz = {acc:.3f}")
    print(f"wrote {args.out / 'models' / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
