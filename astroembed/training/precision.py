"""Half-precision (fp16) copies of ONNX encoders, converted on the graph with onnx alone.

Why on the graph and not by exporting a half-precision torch module: the same conversion
then serves every encoder astroembed writes (trained, imported) and any ONNX file that keeps
the contract, and it is tested on small hand-built graphs without torch.

The boundary stays float32: a ``Cast`` follows each float input and precedes each float
output, so ``embed`` feeds and reads an fp16 encoder exactly as an fp32 one. Inside, float
weights, constants and casts become fp16, except around the operators in
:data:`KEEP_FP32`, whose sums of squares leave fp16's range (max 65504) for embeddings of
ordinary size; those run in float32 between casts.
"""

from __future__ import annotations

import numpy as np

from astroembed.errors import ModelError
from astroembed.runtime.modelfile import PRECISIONS

__all__ = ["FP16_MAX", "KEEP_FP32", "PRECISIONS", "convert_to_fp16", "l2_normalised"]

FP16_MAX = float(np.finfo(np.float16).max)
#: Operators kept in float32: norms square their inputs, which overflows fp16.
KEEP_FP32 = frozenset({"LpNormalization", "ReduceL2", "ReduceSumSquare"})


def l2_normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in float64 so the comparison of
    two precisions is not itself rounded."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _float_tensors(model) -> set[str]:
    """Names of the graph's float32 tensors (inputs, initializers, inferred intermediates)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    floats = {v.name for v in [*g.input, *g.output, *g.value_info]
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    floats |= {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return floats


def _half(tensor, where: str):
    """``tensor`` (a float32 TensorProto) as fp16; ModelError if a value leaves fp16's range."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > FP16_MAX:
        raise ModelError(f"{where}: {tensor.name or 'a constant'} holds values up to "
                         f"{float(np.abs(finite).max()):.3g}, beyond fp16's {FP16_MAX:g}; this "
                         "encoder cannot be converted to fp16 (export it as fp32).")
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def _convert_attributes(node, where: str) -> None:
    """Float constants and casts inside ``node`` turned to fp16."""
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH or attr.type == onnx.AttributeProto.GRAPHS:
            raise ModelError(f"{where}: node {node.name or node.op_type} holds a subgraph "
                             "(If/Loop/Scan); fp16 conversion supports flat graphs only.")
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT:
            attr.t.CopyFrom(_half(attr.t, where))
    if node.op_type == "Cast":
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.FLOAT16
    if node.op_type == "Constant":
        for attr in list(node.attribute):
            if attr.name in ("value_float", "value_floats"):
                values = [attr.f] if attr.name == "value_float" else list(attr.floats)
                array = np.asarray(values if attr.name == "value_floats" else values[0],
                                   dtype=np.float32)
                node.attribute.remove(attr)
                node.attribute.append(onnx.helper.make_attribute(
                    "value", _half(onnx.numpy_helper.from_array(array), where)))


def _cast(src: str, dst: str, to: int, name: str):
    import onnx

    return onnx.helper.make_node("Cast", [src], [dst], to=to, name=name)


def convert_to_fp16(model, where: str = "encoder"):
    """An fp16 copy of the ONNX ``model`` (a ModelProto) with float32 inputs and outputs.

    ModelError for graphs this conversion does not cover (subgraphs, weights beyond fp16's
    range). ``where`` names the model in errors.
    """
    import onnx

    FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    floats = _float_tensors(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == FLOAT:
            g.initializer[i].CopyFrom(_half(init, where))
    nodes = []
    for node in g.node:
        _convert_attributes(node, where)
        if node.op_type not in KEEP_FP32:
            nodes.append(node)
            continue
        # between casts: fp16 -> float32 in, float32 -> fp16 out
        for k, name in enumerate(node.input):
            if name in floats:
                wide = f"{name}__fp32_for_{node.name or len(nodes)}"
                nodes.append(_cast(name, wide, FLOAT, f"{wide}__cast"))
                node.input[k] = wide
        renamed = []
        for k, name in enumerate(node.output):
            if name in floats:
                node.output[k] = f"{name}__fp32"
                renamed.append((node.output[k], name))
        nodes.append(node)
        nodes += [_cast(wide, name, HALF, f"{name}__cast") for wide, name in renamed]
    inputs = {i.name for i in g.input if i.type.tensor_type.elem_type == FLOAT}
    outputs = {o.name for o in g.output if o.type.tensor_type.elem_type == FLOAT}
    for node in nodes:
        for k, name in enumerate(node.input):
            if name in inputs:
                node.input[k] = f"{name}__fp16"
            elif name in outputs:
                node.input[k] = f"{name}__fp16"
        for k, name in enumerate(node.output):
            if name in outputs:
                node.output[k] = f"{name}__fp16"
    head = [_cast(name, f"{name}__fp16", HALF, f"{name}__to_fp16") for name in sorted(inputs)]
    tail = [_cast(f"{name}__fp16", name, FLOAT, f"{name}__to_fp32") for name in sorted(outputs)]
    del g.node[:]
    g.node.extend(head + nodes + tail)
    for info in g.value_info:  # intermediates are fp16 now; re-inferred by onnxruntime
        if info.type.tensor_type.elem_type == FLOAT:
            info.type.tensor_type.elem_type = HALF
    onnx.checker.check_model(out)
    return out
