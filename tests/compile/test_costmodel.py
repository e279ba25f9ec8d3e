"""The cost model's counts match figures worked out by hand."""

import pytest

from edgeship.targets.costmodel import estimate, node_work, peak_activation_bytes, weight_bytes
from edgeship.targets.graphinfo import GraphInfo
from edgeship.targets.placement import legalize

from .graphs import conv_model, matmul_chain, npu_profile, qdq_conv, residual_block


def works(model):
    g = GraphInfo(model)
    return g, {n.name: node_work(g, n) for n in g.active_nodes()}


def test_conv_counts_exact():
    g, w = works(conv_model())
    conv = w["conv0"]
    assert conv.macs == 4 * 8 * 8 * 3 * 3 * 3 == 6912
    assert conv.flops == 2 * 6912
    assert (conv.bytes_in, conv.bytes_out, conv.weight_bytes) == (3 * 64 * 4, 4 * 64 * 4, (4 * 27 + 4) * 4)
    assert weight_bytes(g) == 448
    assert peak_activation_bytes(g)[0] == 768 + 1024


def test_matmul_chain_counts_and_liveness():
    g, w = works(matmul_chain())
    assert (w["mm0"].macs, w["mm1"].macs) == (2 * 32 * 16, 2 * 8 * 32)
    assert w["mm0"].bytes == 2 * 16 * 4 + 2 * 32 * 4 + 16 * 32 * 4
    assert w["mm1"].bytes == 2 * 32 * 4 + 2 * 8 * 4 + 32 * 8 * 4
    assert weight_bytes(g) == 3072
    assert peak_activation_bytes(g) == (128 + 256, "mm0")  # x and h alive while mm0 runs


def test_residual_block_fusion_and_peak_memory():
    g, w = works(residual_block())
    assert set(w) == {"conv1", "conv2", "add", "relu2"}  # relu1 runs fused inside conv1
    assert g.by_name["relu1"].fused_into == "conv1"
    assert w["conv1"].macs == 4 * 64 * 4 * 9
    assert w["conv1"].flops == 2 * 9216 + 256  # + the fused Relu
    assert w["add"].flops == 256 and w["add"].bytes == 3 * 1024
    # x stays alive until the add: x + r1 + c2 while conv2 runs
    assert peak_activation_bytes(g) == (3 * 1024, "conv2")
    section = estimate(g, npu_profile())
    assert section["flops"] == 2 * 9216 + 256 + 2 * 9216 + 256 + 256
    assert section["peak_memory_bytes"] == 2 * 576 + 3 * 1024  # weights + the largest live activations


def test_qdq_conv_counts_in_int8():
    g, w = works(qdq_conv())
    assert g.by_name["conv0"].quant_format == "int8"
    assert g.by_name["dq_in"].absorbed and g.by_name["q_out"].absorbed and g.by_name["dq_w"].folded
    assert set(w) == {"q_in", "conv0", "dq_out"}  # boundary conversions stay, the ones around conv are absorbed
    conv = w["conv0"]
    assert conv.fmt == "int8"
    assert conv.flops == 2 * 4 * 64 * 27
    assert (conv.bytes_in, conv.bytes_out) == (3 * 64, 4 * 64)  # int8 activations
    assert conv.weight_bytes == 4 * 27 + 4 + 1  # int8 weights + scale + zero point


def test_roofline_time_per_node():
    g = GraphInfo(conv_model())
    section = estimate(g, npu_profile(), legalize(g, npu_profile()))
    node = section["per_node"][0]
    # float32 on the NPU: 13824 FLOP / (0.5e12 * 0.5) = 0.0553 us; 2240 B / 10 GB/s = 0.224 us -> memory bound
    assert node["bound"] == "memory"
    assert node["time_us"] == pytest.approx(0.224, abs=1e-3)
    # the graph input comes from the host and the output goes back: 2 transfers at 20 us + bytes / 1 GB/s
    assert section["transfers"] == 2
    assert section["latency_ms"] == pytest.approx((0.224 + 40 + (768 + 1024) / 1e3) / 1000, rel=1e-3)


def test_on_chip_memory_removes_external_traffic():
    g = GraphInfo(conv_model())
    big = estimate(g, npu_profile(sram_kb=64))  # 2240 bytes of everything fit easily: no DRAM traffic
    small = estimate(g, npu_profile(sram_kb=None))
    assert big["per_node"][0]["memory_us"] == 0 and big["per_node"][0]["bound"] == "compute"
    assert small["per_node"][0]["memory_us"] == pytest.approx(0.224, abs=1e-3)


def test_real_model_macs_match_the_published_figure():
    """ResNet-50 at 224x224: ~4.09 GMACs (the usual published figure counts convs and the FC layer)."""
    from edgeship.targets.calibration_models import light_models

    (resnet,) = light_models(["resnet50"])
    g = GraphInfo(resnet.model, resnet.inputs)
    macs = sum(node_work(g, n).macs for n in g.active_nodes())
    assert 4.05e9 < macs < 4.13e9
    assert weight_bytes(g) == pytest.approx(25.5e6 * 4, rel=0.03)  # 25.5 M float parameters
