"""The Gemm rewrite that precedes onnxruntime's weight quantizers."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hart.export.onnx_quantize import gemm_to_matmul, quantize_int8


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


def run(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


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
    got = run(str(tmp_path / "q.onnx"), x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # int8 rounding, not a wrong layout
