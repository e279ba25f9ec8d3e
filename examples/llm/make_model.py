#!/usr/bin/env python3
"""LLM example: a small decoder-only transformer -> next-token logits [1, 16, 128].

Token + position embeddings, 2 pre-LayerNorm blocks (4-head causal self-attention with an explicit
causal mask, a GELU MLP), a final LayerNorm and a head tied to the token embedding. Weights are
seeded random (no downloads, same bytes every run); the data are token sequences from a fixed
random Markov chain, so calibration and evaluation see the statistics of one "language".

    python examples/llm/make_model.py                # models/tiny-decoder.onnx, data/calib.npz, data/eval.npz
    python examples/llm/make_model.py --variant v2   # models/tiny-decoder-v2.onnx: only the last layer differs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
VOCAB, SEQ, DIM, HEADS, LAYERS, FF = 128, 16, 64, 4, 2, 256
HEAD_DIM = DIM // HEADS


class Graph:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def layer_norm(g, rng, x, name):
    scale = (1.0 + rng.normal(0, 0.05, DIM)).astype(np.float32)
    bias = rng.normal(0, 0.02, DIM).astype(np.float32)
    return g.node("LayerNormalization", [x, g.const(f"{name}.scale", scale), g.const(f"{name}.bias", bias)],
                  name, axis=-1, epsilon=1e-5)


def linear(g, rng, x, name, fan_in, fan_out, std=None):
    w = rng.normal(0, std or 1.0 / np.sqrt(fan_in), (fan_in, fan_out)).astype(np.float32)
    b = rng.normal(0, 0.02, fan_out).astype(np.float32)
    y = g.node("MatMul", [x, g.const(f"{name}.weight", w)], f"{name}/matmul")
    return g.node("Add", [y, g.const(f"{name}.bias", b)], f"{name}/add")


def split_heads(g, x, name):
    x = g.node("Reshape", [x, "/const/heads_shape"], f"{name}/reshape")
    return g.node("Transpose", [x], f"{name}/transpose", perm=[0, 2, 1, 3])  # [1, H, T, Dh]


def attention(g, rng, x, name):
    q = split_heads(g, linear(g, rng, x, f"{name}/q_proj", DIM, DIM), f"{name}/q")
    k = split_heads(g, linear(g, rng, x, f"{name}/k_proj", DIM, DIM), f"{name}/k")
    v = split_heads(g, linear(g, rng, x, f"{name}/v_proj", DIM, DIM), f"{name}/v")
    kt = g.node("Transpose", [k], f"{name}/k/transpose_t", perm=[0, 1, 3, 2])
    scores = g.node("MatMul", [q, kt], f"{name}/scores")
    scores = g.node("Mul", [scores, "/const/inv_sqrt_dh"], f"{name}/scale")
    scores = g.node("Where", ["/const/causal", scores, "/const/neg_large"], f"{name}/causal_mask")
    probs = g.node("Softmax", [scores], f"{name}/softmax", axis=-1)
    ctx = g.node("MatMul", [probs, v], f"{name}/context")
    ctx = g.node("Transpose", [ctx], f"{name}/context/transpose", perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, "/const/model_shape"], f"{name}/context/reshape")
    return linear(g, rng, ctx, f"{name}/o_proj", DIM, DIM, std=0.5 / np.sqrt(DIM))


def gelu(g, x, name):
    """tanh-free GELU, x * sigmoid(1.702 x): opset-13 ops every target profile knows."""
    s = g.node("Mul", [x, "/const/gelu_k"], f"{name}/scale")
    s = g.node("Sigmoid", [s], f"{name}/sigmoid")
    return g.node("Mul", [x, s], f"{name}/gate")


def build(variant: str = "v1") -> onnx.ModelProto:
    rng = np.random.default_rng(2024)
    g = Graph()
    g.const("/const/heads_shape", np.array([1, SEQ, HEADS, HEAD_DIM], np.int64))
    g.const("/const/model_shape", np.array([1, SEQ, DIM], np.int64))
    g.const("/const/inv_sqrt_dh", np.array(1.0 / np.sqrt(HEAD_DIM), np.float32))
    g.const("/const/causal", np.tril(np.ones((SEQ, SEQ), bool)))
    g.const("/const/neg_large", np.array(-1e4, np.float32))
    g.const("/const/gelu_k", np.array(1.702, np.float32))
    tok_emb = rng.normal(0, 1.0, (VOCAB, DIM)).astype(np.float32)
    pos_emb = rng.normal(0, 0.3, (1, SEQ, DIM)).astype(np.float32)
    x = g.node("Gather", [g.const("/embed/tokens.weight", tok_emb), "input_ids"], "/embed/tokens", axis=0)
    x = g.node("Add", [x, g.const("/embed/positions.weight", pos_emb)], "/embed/add_positions")
    for i in range(LAYERS):
        name = f"/layers.{i}"
        h = layer_norm(g, rng, x, f"{name}/ln_1")
        x = g.node("Add", [x, attention(g, rng, h, f"{name}/attn")], f"{name}/residual_1")
        h = layer_norm(g, rng, x, f"{name}/ln_2")
        h = linear(g, rng, h, f"{name}/mlp/fc_in", DIM, FF)
        h = gelu(g, h, f"{name}/mlp/gelu")
        h = linear(g, rng, h, f"{name}/mlp/fc_out", FF, DIM, std=0.5 / np.sqrt(FF))
        x = g.node("Add", [x, h], f"{name}/residual_2")
    x = layer_norm(g, rng, x, "/final_ln")
    head = tok_emb.T.copy()
    if variant == "v2":  # "retrained last layer": the head drifts from the tied embedding
        head = head + np.random.default_rng(99).normal(0, 0.05, head.shape).astype(np.float32)
    g.nodes.append(helper.make_node("MatMul", [x, g.const("/lm_head.weight", head)], ["logits"], name="/lm_head/matmul"))
    graph = helper.make_graph(
        g.nodes, "tiny_decoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, SEQ, VOCAB])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeship-examples")
    model.ir_version = 8
    model.doc_string = f"edgeship example: tiny transformer decoder ({variant}), {LAYERS} layers, d={DIM}, vocab={VOCAB}"
    onnx.checker.check_model(model)
    return model


def token_sequences(n: int, seed: int) -> np.ndarray:
    """Sequences from a fixed sparse Markov chain over the vocabulary: (N, 1, SEQ) int64."""
    chain_rng = np.random.default_rng(77)
    successors = chain_rng.integers(0, VOCAB, (VOCAB, 4))
    rng = np.random.default_rng(seed)
    out = np.empty((n, 1, SEQ), np.int64)
    for i in range(n):
        tok = int(rng.integers(0, VOCAB))
        for t in range(SEQ):
            out[i, 0, t] = tok
            tok = int(successors[tok, rng.integers(0, 4)]) if rng.random() < 0.9 else int(rng.integers(0, VOCAB))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["v1", "v2"], default="v1", help="v2: only the lm head's weights differ")
    parser.add_argument("--out", type=Path, default=HERE, help="example folder (models/ and data/ go under it)")
    args = parser.parse_args(argv)
    model = build(args.variant)
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    name = "tiny-decoder.onnx" if args.variant == "v1" else "tiny-decoder-v2.onnx"
    onnx.save(model, args.out / "models" / name)
    if args.variant == "v1":
        np.savez(args.out / "data" / "calib.npz", input_ids=token_sequences(64, seed=5))
        np.savez(args.out / "data" / "eval.npz", input_ids=token_sequences(64, seed=6))
    print(f"wrote {args.out / 'models' / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
