"""The Gemm rewrite that precedes the weight quantizers, and the weight-only int8 they lead to."""

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hart.export.onnx_quantize import (INT8_BLOCK, dequantized, gemm_to_matmul, int8_blocks, module_of, quantize_int4,
                                       quantize_int8, quantize_qdq)


def shared_weight_graph() -> onnx.ModelProto:
    """Two Gemms sharing one non-square weight (as the unrolled residual sampler's steps do), then a
    bias-free Gemm (the exporter drops zero biases)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")  # [out, in]
    b = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b")
    v = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "v")
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h1"], name="first", transB=1),
             helper.make_node("Gemm", ["x", "w", "b"], ["h2"], name="second", transB=1),
             helper.make_node("Add", ["h1", "h2"], ["h"]),
             helper.make_node("Gemm", ["h", "v"], ["y"], name="no_bias", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w, b, v])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def wide_graph(unit_dim: bool = False) -> onnx.ModelProto:
    """MatMuls wide enough for several int8 blocks: K = 200 (6 blocks of 32 and a partial one), K = 96
    (3 whole blocks; [1, 96, 64] with `unit_dim`), then a head the int4 pass keeps at 8 bits (its
    namespace names a SENSITIVE_MODULES module)."""
    rng = np.random.default_rng(2)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("up", (200, 96)), ("mid", (1, 96, 64) if unit_dim else (96, 64)),
                                   ("head", (64, 32)))]
    nodes = [helper.make_node("MatMul", ["x", "up"], ["h1"], name="up_mm"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu_1"),
             helper.make_node("MatMul", ["r1", "mid"], ["h2"], name="mid_mm"),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu_2"),
             helper.make_node("MatMul", ["r2", "head"], ["h3"], name="head_mm"),
             helper.make_node("Reshape", ["h3", "flat"], ["y"], name="flatten")]
    helper.set_metadata_props(nodes[4], {"namespace": ": Graph/transformer.head: torch.nn.modules.linear.Linear/"
                                                      "linear_7: aten.linear.default"})
    flat = numpy_helper.from_array(np.array([-1, 32], np.int64), "flat")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 200])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])], weights + [flat])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def run(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def rows(seed: int, n: int, width: int) -> np.ndarray:
    """Rows of very different ranges: a quantizer that shares anything between rows shows it."""
    x = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    return x * np.array([100.0, 1.0, 0.01] * n, np.float32)[:n, None]


def test_gemm_rewrite_keeps_the_function_and_stores_each_weight_once():
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    original = shared_weight_graph()
    rewritten = gemm_to_matmul(shared_weight_graph())
    assert {n.op_type for n in rewritten.graph.node} == {"MatMul", "Add"}
    assert sorted(i.name for i in rewritten.graph.initializer) == ["b", "v__matmul", "w__matmul"]
    np.testing.assert_allclose(run(rewritten, x), run(original, x), rtol=1e-6, atol=1e-6)


def test_dynamic_int8_of_shared_non_square_weights(tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    onnx.save(shared_weight_graph(), tmp_path / "g.onnx")
    quantize_int8(tmp_path / "g.onnx", tmp_path / "q.onnx")
    want = run(shared_weight_graph(), x)
    got = run(tmp_path / "q.onnx", x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # int8 rounding, not a wrong layout


@pytest.mark.parametrize("graph", [shared_weight_graph, wide_graph, lambda: wide_graph(unit_dim=True)])
def test_int8_is_the_float_graph_on_rounded_weights(tmp_path, graph):
    """Weights int8 on disk, once per shared weight; the computation the float32 one on them."""
    onnx.save(graph(), tmp_path / "g.onnx")
    quantize_int8(tmp_path / "g.onnx", tmp_path / "q.onnx")
    quantized = onnx.load(tmp_path / "q.onnx")
    assert not {n.op_type for n in quantized.graph.node} & {"DynamicQuantizeLinear", "MatMulInteger", "MatMulNBits",
                                                            "QuantizeLinear", "DequantizeLinear"}
    reference = gemm_to_matmul(graph())
    weights = {i.name for i in reference.graph.initializer if len(i.dims) >= 2}
    stored = {i.name: i for i in quantized.graph.initializer}
    assert {n for n, i in stored.items() if i.data_type == TensorProto.INT8} == {f"{w}__int8" for w in weights}
    assert not weights & set(stored)  # no float32 copy left
    for tensor in reference.graph.initializer:  # the float graph, its weights rounded as the int8 graph stores them
        if tensor.name in weights:
            shape = tuple(tensor.dims)
            values, scale = int8_blocks(numpy_helper.to_array(tensor).reshape(shape[-2], shape[-1]), INT8_BLOCK)
            np.testing.assert_array_equal(values, numpy_helper.to_array(stored[f"{tensor.name}__int8"]))
            tensor.CopyFrom(numpy_helper.from_array(dequantized(values, scale, INT8_BLOCK, shape), tensor.name))
    x = rows(3, 5, reference.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    np.testing.assert_array_equal(run(tmp_path / "q.onnx", x), run(reference, x))
    float32 = run(graph(), x)
    error = np.abs(run(tmp_path / "q.onnx", x) - float32).max(axis=1) / np.abs(float32).max(axis=1)
    assert error.max() < 0.02  # each row within 8-bit rounding of its own scale, the small rows too


def test_int8_batch_equals_its_rows_one_by_one(tmp_path):
    """A batch of 3 rows gives bitwise what each row gives alone: nothing is shared between rows
    (dynamic quantization shares one activation scale) and a lone row takes the float MatMul's
    path, not a kernel of its own (MatMulNBits has one for a single row)."""
    onnx.save(wide_graph(), tmp_path / "g.onnx")
    quantize_int8(tmp_path / "g.onnx", tmp_path / "q.onnx")
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    x = rows(4, 3, 200)
    batch = session.run(None, {"x": x})[0]
    for i in range(3):
        np.testing.assert_array_equal(batch[i:i + 1], session.run(None, {"x": x[i:i + 1]})[0])


def test_int4_batch_equals_its_images_one_by_one(tmp_path):
    """int4 (MatMulNBits, accuracy level 4): 3 images of 2 rows each (the pipeline's conditional and
    unconditional rows) give bitwise what each image's rows give alone. A lone row would not: the
    4-bit kernel has a path of its own for one row."""
    onnx.save(wide_graph(), tmp_path / "g.onnx")
    quantize_int4(tmp_path / "g.onnx", tmp_path / "q.onnx", block_size=32)
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    x = rows(4, 6, 200)
    batch = session.run(None, {"x": x})[0]
    for i in range(0, 6, 2):
        np.testing.assert_array_equal(batch[i:i + 2], session.run(None, {"x": x[i:i + 2]})[0])


def test_int4_keeps_the_sensitive_layers_at_weight_only_int8(tmp_path):
    onnx.save(wide_graph(), tmp_path / "g.onnx")
    quantize_int4(tmp_path / "g.onnx", tmp_path / "q.onnx", block_size=32)
    quantized = onnx.load(tmp_path / "q.onnx")
    four_bit = {n.input[1].split("_Q4")[0] for n in quantized.graph.node if n.op_type == "MatMulNBits"}
    eight_bit = {i.name[:-len("__int8")] for i in quantized.graph.initializer if i.data_type == TensorProto.INT8}
    assert (four_bit, eight_bit) == ({"up", "mid"}, {"head"})
    assert {a.name: helper.get_attribute_value(a) for n in quantized.graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute}["accuracy_level"] == 4


def test_module_of_skips_the_aten_op_scope():
    node = wide_graph().graph.node[4]
    assert module_of(node) == "transformer.head"
    assert module_of(helper.make_node("Relu", ["a"], ["b"])) == ""


def _saturating_graph() -> onnx.ModelProto:
    """x, w near their maxima: uint8 activations near 255 times int8 weights near 127."""
    w = np.random.default_rng(5).uniform(0.9, 1.0, (64, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _relative_error(path: Path, x: np.ndarray) -> float:
    want = run(_saturating_graph(), x)
    return float(np.abs(run(path, x) - want).max() / np.abs(want).max())


def _x86_without_vnni() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def test_weight_only_int8_does_not_saturate(tmp_path):
    onnx.save(_saturating_graph(), tmp_path / "g.onnx")
    quantize_int8(tmp_path / "g.onnx", tmp_path / "q.onnx")
    x = np.random.default_rng(6).uniform(0.9, 1.0, (3, 64)).astype(np.float32)
    assert _relative_error(tmp_path / "q.onnx", x) < 0.01


@pytest.mark.skipif(not _x86_without_vnni(), reason="vpmaddubsw saturation: x86 CPUs without VNNI only")
def test_dynamic_u8s8_saturates_without_vnni(tmp_path):
    """Why int8 is not onnxruntime's dynamic quantization: uint8 x int8 pairs summed in int16 (AVX2's
    vpmaddubsw) clip at 32767, about half of 2 * 255 * 127, on the graph above."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(_saturating_graph(), tmp_path / "g.onnx")
    quantize_dynamic(str(tmp_path / "g.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])
    x = np.random.default_rng(6).uniform(0.9, 1.0, (3, 64)).astype(np.float32)
    assert _relative_error(tmp_path / "q.onnx", x) > 0.3


def test_static_qdq_does_not_saturate(tmp_path):
    """qdq's uint8 x uint8 MatMuls cannot overflow the int16 pair sums of x86 without VNNI, where the
    uint8 x int8 default loses half of this graph's output (checked under an emulated AVX2 CPU)."""
    onnx.save(_saturating_graph(), tmp_path / "g.onnx")
    x = np.random.default_rng(6).uniform(0.9, 1.0, (3, 64)).astype(np.float32)
    quantize_qdq(tmp_path / "g.onnx", tmp_path / "q.onnx", [{"x": x[i:i + 1]} for i in range(3)])
    assert _relative_error(tmp_path / "q.onnx", x) < 0.02
