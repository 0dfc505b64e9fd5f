"""ONNX precisions, made with onnxruntime's own tools.

    fp16   onnxruntime.transformers.float16 (inputs and outputs stay float32)
    int8   dynamic int8, per-channel weights, on every constant-weight MatMul
    qdq    static int8 QDQ: activations calibrated on every scale's inputs from real pipeline runs
    int4   MatMulNBits 4-bit weights (block 32 or 128, RTN or HQQ) with the sensitive layers (inputs,
           output heads, their modulations) kept at dynamic int8

Linear layers on 2-D inputs export as Gemm, which the weight quantizers skip; they are rewritten as
MatMul + Add first. Which module a node belongs to comes from the exporter's "namespace" metadata.
"""

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Layers whose quantization error reaches the output directly: kept at 8 bits in int4 graphs.
SENSITIVE_MODULES = (
    r"transformer\.latent_in", r"transformer\.context_in", r"transformer\.head", r"transformer\.head_norm\.adaln",
    r"head\.cond_proj", r"head\.input_proj", r"head\.final_adaln", r"head\.final_proj",
)
INT4_ALGORITHMS = ("rtn", "hqq")


def module_of(node: onnx.NodeProto) -> str:
    """The torch module path a node came from, e.g. 'transformer.blocks.0.mlp.up' ('' if unknown)."""
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    scopes = [part.split(":")[0].strip() for part in namespace.split("/") if part.strip()]
    return scopes[-1] if scopes else ""


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, W[, b]) with constant W (and b) as MatMul(A, W^T) [+ b], same module metadata.

    Done here rather than by onnxruntime's quantizer, which transposes W in place assuming one user:
    the residual sampler's 8 unrolled steps share every weight, and a bias-free Gemm (the exporter
    drops zero biases) would otherwise be left to it."""
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        biased = len(node.input) == 3 and node.input[2] != ""
        rewritable = (node.op_type == "Gemm" and node.input[1] in initializers
                      and (not biased or node.input[2] in initializers) and attributes.get("transA", 0) == 0
                      and attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0)
        if not rewritable:
            nodes.append(node)
            continue
        transposed = f"{node.input[1]}__matmul" if attributes.get("transB", 0) else node.input[1]
        if transposed not in initializers:  # once per weight, however many Gemms share it
            weight = numpy_helper.to_array(initializers[node.input[1]]).T
            initializers[transposed] = numpy_helper.from_array(np.ascontiguousarray(weight), transposed)
            model.graph.initializer.append(initializers[transposed])
        product = f"{node.output[0]}__matmul" if biased else node.output[0]
        new = [helper.make_node("MatMul", [node.input[0], transposed], [product], name=f"{node.name}__matmul")]
        if biased:
            new.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}__bias"))
        for rewritten in new:
            rewritten.metadata_props.extend(node.metadata_props)
        nodes += new
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]  # recorded by the exporter; the quantizers infer shapes anew
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _constant_weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in initializers]


LARGE = 1_800_000_000  # protobuf files stop at 2 GB: larger models keep their weights in <file>.data


def _bytes(path: Path) -> int:
    """A graph's size with its external data (optimum names it <file>_data, the exporter <file>.data)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}.data"), Path(f"{path}_data")) if p.exists())


def _weight_bytes(model: onnx.ModelProto) -> int:
    """The initializers' bytes (ByteSize() itself fails on a proto past 2 GB)."""
    return sum(len(t.raw_data) if t.HasField("raw_data") else t.ByteSize() for t in model.graph.initializer)


def _save(model: onnx.ModelProto, path: Path) -> None:
    large = _weight_bytes(model) > LARGE
    onnx.save_model(model, str(path), save_as_external_data=large, location=f"{path.name}.data" if large else None)


def _prepared(source: Path) -> onnx.ModelProto:
    return gemm_to_matmul(onnx.load(str(source)))


def quantize_int8(source: Path, target: Path, exclude: list[str] | None = None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staged = target.with_suffix(".matmul.onnx")
    _save(_prepared(source), staged)
    try:
        quantize_dynamic(str(staged), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude or [],
                         extra_options={"MatMulConstBOnly": True}, use_external_data_format=_bytes(staged) > LARGE)
    finally:
        staged.unlink(missing_ok=True)
        Path(f"{staged}.data").unlink(missing_ok=True)


def quantize_int4(source: Path, target: Path, block_size: int = 128, algorithm: str = "rtn") -> None:
    """4-bit MatMulNBits on every constant MatMul except SENSITIVE_MODULES, which then get dynamic int8."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer,
                                                                 RTNWeightOnlyQuantConfig)

    model = _prepared(source)
    sensitive = [n.name for n in _constant_weight_matmuls(model)
                 if any(re.fullmatch(p, module_of(n)) for p in SENSITIVE_MODULES)]
    config = (HQQWeightOnlyQuantConfig(block_size=block_size, bits=4) if algorithm == "hqq"
              else RTNWeightOnlyQuantConfig())
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=sensitive, algo_config=config)
    quantizer.process()
    quantized = quantizer.model.model
    # the quantizer declares the com.microsoft domain of MatMulNBits only on its in-memory path for
    # small models; past 2 GB it leaves it out and shape inference (in the int8 pass) then fails
    if not any(o.domain == "com.microsoft" for o in quantized.opset_import):
        quantized.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    staged = target.with_suffix(".int4.onnx")
    _save(quantized, staged)
    try:
        quantize_int8(staged, target)  # only the remaining float MatMuls: the sensitive layers
    finally:
        staged.unlink(missing_ok=True)
        Path(f"{staged}.data").unlink(missing_ok=True)


def quantize_qdq(source: Path, target: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """Static int8 QDQ (uint8 activations, per-channel int8 weights) calibrated on `calibration` feeds."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(calibration)

        def get_next(self):
            return next(self.remaining, None)

    staged = target.with_suffix(".matmul.onnx")
    _save(_prepared(source), staged)
    try:
        quantize_static(str(staged), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        extra_options={"MatMulConstBOnly": True}, use_external_data_format=_bytes(staged) > LARGE)
    finally:
        staged.unlink(missing_ok=True)
        Path(f"{staged}.data").unlink(missing_ok=True)


def _without_repeated_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes that repeat an earlier node exactly (same op, name, inputs and outputs).

    The fp16 converter inserts one float32 Cast per consumer of a constant kept in float32 (the
    exporter shares one Resize `scales` constant among every upsampling), all with one name and one
    output; onnxruntime refuses such a graph, and the copies compute the same value."""
    seen, kept = set(), []
    for node in model.graph.node:
        key = (node.op_type, node.name, tuple(node.input), tuple(node.output))
        if key not in seen:
            seen.add(key)
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def convert_fp16(source: Path, target: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _save(_without_repeated_nodes(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)), target)
