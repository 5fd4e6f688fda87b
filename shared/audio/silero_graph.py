"""A faster, equivalent Silero VAD graph, built at load time from faster-whisper's bundled `silero_vad_v6.onnx`.

onnxruntime's Conv loops over the batch and runs one tiny matmul per 32 ms window (the STFT conv alone is a
[258x256]x[256x4] product per window), so feeding many windows per call never shares the encoder's cost, which
is most of the model's time. Here the STFT and the four encoder Conv1d layers become MatMuls whose rows are
every frame of every window in the call (convolution taps that only ever see zero padding are dropped), and the
LSTM stays ONNX's LSTM. Same weights, same inputs and outputs (`input` [rows, 576], `h`/`c` [1, streams, 128]
-> `speech_probs`, `hn`, `cn`; with one stream the rows are its consecutive windows, as for the stock model),
probabilities within ~1e-5 of the stock model's, at about a third of its cost.

Nothing is written to disk: `fast_silero_model` returns the serialized model, which
`onnxruntime.InferenceSession` accepts as bytes, and the weights come from the installed faster-whisper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import NodeProto, TensorProto, helper, numpy_helper

Array = npt.NDArray[np.float32]

HIDDEN = 128  # LSTM state size: h/c are [1, streams, HIDDEN]
_HOP = 128  # STFT hop (samples); the frame is two hops
_BINS = 129  # STFT bins (frame // 2 + 1)
_FRAMES = 4  # STFT frames per window: 64 context + 512 samples, reflect-padded by hop // 2 on the right
_ROW = 4 * _HOP + _HOP // 2  # 576 samples per input row
_OPSET = 17

# Weight shapes and strides of the stock v6 export's Conv nodes, in graph order: STFT basis, four encoder
# layers, decoder. The rewrite hard-codes the framing these imply, so anything else is refused.
_CONV_SHAPES = [(2 * _BINS, 1, 2 * _HOP), (128, _BINS, 3), (64, 128, 3), (64, 64, 3), (128, 64, 3), (1, HIDDEN, 1)]
_CONV_STRIDES = [_HOP, 1, 2, 2, 1, 1]
_LSTM_SHAPES = [(1, 4 * HIDDEN, 128), (1, 4 * HIDDEN, HIDDEN), (1, 8 * HIDDEN)]


class UnexpectedSileroModel(ValueError):
    """The stock Silero file is not the v6 export the rewrite was made for (e.g. another faster-whisper)."""


@dataclass(frozen=True, slots=True)
class SileroWeights:
    """What the rewrite needs from the stock model: STFT basis, encoder convs, LSTM and decoder weights."""

    basis: Array  # [2 * bins, frame]: real rows, then imaginary rows
    convs: list[tuple[Array, Array]]  # encoder Conv1d (weight [out, in, 3], bias [out]) x 4
    lstm_w: Array  # ONNX LSTM W, R, B
    lstm_r: Array
    lstm_b: Array
    dec_w: Array  # decoder 1x1 conv weight [1, hidden, 1], bias [1]
    dec_b: Array


def _strides(node: NodeProto) -> list[int]:
    """A Conv node's strides attribute (ONNX's default is 1)."""
    for attr in node.attribute:
        if attr.name == "strides":
            return list(attr.ints)
    return [1]


def _fail(what: str) -> UnexpectedSileroModel:
    """The error for a stock file the rewrite does not fit, saying what differed (the caller falls back)."""
    return UnexpectedSileroModel(f"Silero model is not the expected faster-whisper v6 export: {what}")


def _conv_weights(node: NodeProto, init: dict[str, Array], index: int) -> tuple[Array, Array | None]:
    """One Conv node's weight and bias, checked against the v6 export's shape and stride."""
    weight = init.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.shape != _CONV_SHAPES[index]:
        shape = None if weight is None else weight.shape
        raise _fail(f"Conv {index} weight {shape}, expected {_CONV_SHAPES[index]}")
    if _strides(node) != [_CONV_STRIDES[index]]:
        raise _fail(f"Conv {index} strides {_strides(node)}, expected [{_CONV_STRIDES[index]}]")
    bias = init.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if index > 0 and (bias is None or bias.shape != (weight.shape[0],)):
        raise _fail(f"Conv {index} has no bias of shape ({weight.shape[0]},)")
    return weight, bias


def _lstm_weights(model: onnx.ModelProto, init: dict[str, Array]) -> list[Array]:
    """W, R, B of the single LSTM node, checked against the v6 export's shapes."""
    lstms = [n for n in model.graph.node if n.op_type == "LSTM"]
    if len(lstms) != 1:
        raise _fail(f"{len(lstms)} LSTM nodes, expected 1")
    found = [init.get(name) for name in lstms[0].input[1:4]]
    shapes = [None if a is None else a.shape for a in found]
    if shapes != _LSTM_SHAPES:
        raise _fail(f"LSTM weights {shapes}, expected {_LSTM_SHAPES}")
    return [a for a in found if a is not None]


def extract_weights(model: onnx.ModelProto) -> SileroWeights:
    """The weights of faster-whisper's v6 Silero export, or UnexpectedSileroModel if its structure differs."""
    init = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if len(convs) != len(_CONV_SHAPES):
        raise _fail(f"{len(convs)} Conv nodes, expected {len(_CONV_SHAPES)}")
    weights = [_conv_weights(node, init, i) for i, node in enumerate(convs)]
    encoder = [(w, b) for w, b in weights[1:5] if b is not None]
    dec_w, dec_b = weights[5]
    if dec_b is None:
        raise _fail("decoder Conv has no bias")
    lstm_w, lstm_r, lstm_b = _lstm_weights(model, init)
    basis = weights[0][0][:, 0, :]
    return SileroWeights(basis, encoder, lstm_w, lstm_r, lstm_b, dec_w, dec_b)


def banded(weight: Array, n_in: int, n_out: int, stride: int) -> Array:
    """A Conv1d weight [out, in, 3] (padding 1) over `n_in` frames as one dense matrix [n_in * in, n_out * out]
    acting on frame-major flattened features, so the whole layer is a single MatMul."""
    out_ch, in_ch, kernel = weight.shape
    dense = np.zeros((n_in * in_ch, n_out * out_ch), np.float32)
    for t in range(n_out):
        for k in range(kernel):
            f = stride * t + k - 1
            if 0 <= f < n_in:
                dense[f * in_ch : (f + 1) * in_ch, t * out_ch : (t + 1) * out_ch] = weight[:, :, k].T
    return dense


def _ints(*values: int) -> npt.NDArray[np.int64]:
    """An int64 constant (ONNX takes shapes, pads and slice bounds as int64 tensors)."""
    return np.array(values, np.int64)


def _initializers(w: SileroWeights) -> dict[str, npt.NDArray[np.float32] | npt.NDArray[np.int64]]:
    """Every constant of the rewritten graph: the MatMul forms of the stock weights plus shapes and indices."""
    (w0, b0), (w1, b1), (w2, b2), (w3, b3) = w.convs
    return {
        "basis_re": w.basis[:_BINS].T.copy(),
        "basis_im": w.basis[_BINS:].T.copy(),
        "w0": banded(w0, _FRAMES, _FRAMES, 1),
        "b0": np.tile(b0, _FRAMES),
        "w1": banded(w1, _FRAMES, 2, 2),
        "b1": np.tile(b1, 2),
        "w2": banded(w2, 2, 1, 2),
        "b2": b2,
        "w3": banded(w3, 1, 1, 1),
        "b3": b3,
        "W": w.lstm_w,
        "R": w.lstm_r,
        "B": w.lstm_b,
        "dw": w.dec_w[0, :, 0][:, None].copy(),
        "db": w.dec_b,
        "pads_in": _ints(0, 0, 0, _HOP // 2),
        "blk_shape": _ints(-1, _FRAMES + 1, _HOP),
        "flat_mag": _ints(-1, _FRAMES * _BINS),
        "m1": _ints(-1),
        "s0": _ints(0),
        "s1": _ints(1),
        "s4": _ints(4),
        "s5": _ints(5),
        "ax1": _ints(1),
        "hidden": _ints(HIDDEN),
        "rows_hidden": _ints(-1, HIDDEN),
    }


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> NodeProto:
    """One node; attributes as keyword arguments (ONNX's make_node, typed for our use)."""
    node: NodeProto = helper.make_node(op, inputs, outputs, **attrs)
    return node


def _dense(x: str, weight: str, bias: str, out: str) -> list[NodeProto]:
    """Relu(x @ weight + bias): one rewritten Conv1d layer."""
    return [
        _node("MatMul", [x, weight], [f"{out}_mm"]),
        _node("Add", [f"{out}_mm", bias], [f"{out}_add"]),
        _node("Relu", [f"{out}_add"], [out]),
    ]


def _stft_nodes() -> list[NodeProto]:
    """Rows [N, 576] -> STFT magnitudes [N, 4 * bins]: reflect-pad, four half-overlapping frames, two MatMuls."""
    return [
        _node("Pad", ["input", "pads_in"], ["xp"], mode="reflect"),
        _node("Reshape", ["xp", "blk_shape"], ["blk"]),  # [N, 5, hop]
        _node("Slice", ["blk", "s0", "s4", "ax1"], ["blk_a"]),
        _node("Slice", ["blk", "s1", "s5", "ax1"], ["blk_b"]),
        _node("Concat", ["blk_a", "blk_b"], ["frames"], axis=2),  # [N, 4, frame]
        _node("MatMul", ["frames", "basis_re"], ["re"]),
        _node("MatMul", ["frames", "basis_im"], ["im"]),
        _node("Mul", ["re", "re"], ["re2"]),
        _node("Mul", ["im", "im"], ["im2"]),
        _node("Add", ["re2", "im2"], ["power"]),
        _node("Sqrt", ["power"], ["mag"]),
        _node("Reshape", ["mag", "flat_mag"], ["magf"]),
    ]


def _decoder_nodes() -> list[NodeProto]:
    """Encoder features [T * B, 128] -> LSTM over [T, B, 128] (B from h) -> one probability per row."""
    return [
        _node("Shape", ["h"], ["hshape"]),
        _node("Gather", ["hshape", "s1"], ["streams"], axis=0),
        _node("Concat", ["m1", "streams", "hidden"], ["seq_shape"], axis=0),
        _node("Reshape", ["h3", "seq_shape"], ["seq"]),
        _node("LSTM", ["seq", "W", "R", "B", "", "h", "c"], ["y", "hn", "cn"], hidden_size=HIDDEN),
        _node("Reshape", ["y", "rows_hidden"], ["y2"]),
        _node("Relu", ["y2"], ["y3"]),
        _node("MatMul", ["y3", "dw"], ["dm"]),
        _node("Add", ["dm", "db"], ["da"]),
        _node("Sigmoid", ["da"], ["ds"]),
        _node("Reshape", ["ds", "m1"], ["speech_probs"]),
    ]


def _nodes() -> list[NodeProto]:
    """The whole graph: STFT, four encoder layers as MatMuls, LSTM and decoder."""
    return [
        *_stft_nodes(),
        *_dense("magf", "w0", "b0", "h0"),
        *_dense("h0", "w1", "b1", "h1"),
        *_dense("h1", "w2", "b2", "h2"),
        *_dense("h2", "w3", "b3", "h3"),
        *_decoder_nodes(),
    ]


def _state_info(name: str) -> onnx.ValueInfoProto:
    """h/c and hn/cn: [1, streams, hidden], as in the stock model."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "streams", HIDDEN])


def build_model(w: SileroWeights) -> onnx.ModelProto:
    """The rewritten graph around `w`, checked by onnx.checker."""
    graph = helper.make_graph(
        _nodes(),
        "silero_vad_matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["rows", _ROW]), _state_info("h"), _state_info("c")],
        [
            helper.make_tensor_value_info("speech_probs", TensorProto.FLOAT, ["rows"]),
            _state_info("hn"),
            _state_info("cn"),
        ],
        [numpy_helper.from_array(v, k) for k, v in _initializers(w).items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="shared.audio.silero_graph"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fast_silero_model(stock_path: str) -> bytes:
    """The rewritten model for faster-whisper's `silero_vad_v6.onnx` at `stock_path`, serialized for
    `onnxruntime.InferenceSession`. Raises UnexpectedSileroModel if the file is not that export."""
    try:
        stock = onnx.load(stock_path)
    except Exception as exc:  # a truncated or foreign file: same fallback as a changed structure
        raise _fail(f"cannot read {stock_path}: {exc}") from exc
    return bytes(build_model(extract_weights(stock)).SerializeToString())
