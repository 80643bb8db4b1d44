"""LiteRT (TFLite) flatbuffers through litert-torch, for the `android` targets: float, or int8 by
litert-torch's PT2E quantizer."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from export.app import METADATA_KEY, AppInterface
from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from export.quantize import (Inputs, Quantization, calibration_inputs, describe_calibration, pt2e_quantize,
                             require_int8_tensors)
from core.errors import PipelineError, first_line
from core.fileio import atomic_path, storage_fault

log = logging.getLogger(__name__)
LITERT_INT8_SCHEME = "int8 symmetric weights per output channel; int8 activations per tensor (histogram observer)"


@dataclass(frozen=True)
class LiteRTOptions:
    """litert-torch keeps the NCHW interface and inserts the transposes; int8 keeps float input
    and output (quantize and dequantize at the edges)."""

    precision: str = "fp32"


@EXPORTERS.register("litert")
class LiteRTExporter(Exporter):
    name = "litert"
    format = "tflite"
    suffix = ".tflite"
    Options = LiteRTOptions
    modules = ("litert_torch",)
    extra = "android"

    def precisions(self) -> tuple[str, ...]:
        return ("fp32", "int8")

    def versions(self) -> dict[str, str]:
        v = {"torch": torch.__version__, "litert-torch": package_version("litert-torch")}
        if self.precision == "int8":
            v["torchao"] = package_version("torchao")
            v["ai-edge-quantizer"] = package_version("ai-edge-quantizer")
        return v

    def has_layout_edges(self) -> bool:
        return True  # a TRANSPOSE to NHWC at the input and back at the output (tests/test_boundary.py)

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        if self.precision != "int8":
            return None
        return Quantization("int8", "litert_torch PT2EQuantizer (torchao prepare_pt2e/convert_pt2e); "
                            "ai-edge-quantizer static_wi8_ai8 where it fails",
                            LITERT_INT8_SCHEME, describe_calibration(calibration))

    def layouts(self) -> tuple[str, ...]:
        return ("NCHW", "NHWC")

    def io_types(self) -> tuple[str, ...]:
        return ("float", "int8") if self.precision == "int8" else ("float",)

    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None, app: AppInterface | None = None) -> Artifact:
        if app is not None and app.layout == "NHWC":  # litert-torch's own wrapper: no transpose at the input
            from litert_torch._convert.to_channel_last_io import to_channel_last_io

            module, example_inputs = to_channel_last_io(module, args=[0]), _channels_last(example_inputs)
            calibration = None if calibration is None else [_channels_last(b) for b in calibration]
        fallback = None
        with atomic_path(path) as tmp, quiet_converters():
            try:
                import litert_torch  # heavy (pulls in JAX and TensorFlow's converter): import on use

                if self.precision == "int8":
                    fallback = self._int8(module, example_inputs, calibration, tmp)
                else:
                    litert_torch.convert(module.eval(), example_inputs).export(str(tmp))
                if app is not None:
                    self._for_app(tmp, app)
            except PipelineError:
                raise
            except Exception as e:
                raise conversion_error("LiteRT conversion", e, path) from e
        if fallback is not None:  # said outside quiet_converters, which silences every logger
            log.warning("%s: litert-torch's PT2E quantizer failed (%s); quantized with ai-edge-quantizer instead",
                        path.name, fallback)
        return self.artifact(path, example_inputs)

    def _for_app(self, path: Path, app: AppInterface) -> None:
        """The interface the app asked for (an int8 model's input and output float, or int8), and
        the app's facts as the model's own metadata entry."""
        if self.precision == "int8":
            io = int8_interface(path) if app.io == "int8" else float_interface(path)
            if {d["dtype"] for d in io} != {np.int8 if app.io == "int8" else np.float32}:
                raise PipelineError(f"the LiteRT converter left this model's input and output "
                                    f"{sorted({d['dtype'].__name__ for d in io})}, not {app.io}: pass --io float")
        add_metadata(path, METADATA_KEY, json.dumps(app.facts()).encode())

    def app_reference(self, module: torch.nn.Module,
                      app: AppInterface) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        if app.layout == "NCHW":
            return module, lambda x: x
        from litert_torch._convert.to_channel_last_io import to_channel_last_io

        return to_channel_last_io(module, args=[0]), lambda x: _channels_last((x,))[0]

    def interface(self, artifact: Artifact) -> dict[str, Any]:
        inputs, outputs = _details(artifact.path)
        return {"inputs": [_tensor(d) for d in inputs], "outputs": [{**_tensor(d), "meaning": "logits"} for d in outputs]}

    def _int8(self, module: torch.nn.Module, example_inputs: Inputs, calibration: Sequence[Inputs] | None,
              out: Path) -> str | None:
        """litert-torch's PT2E quantizer; where it fails (or leaves the model float), Google's
        ai-edge-quantizer on the float flatbuffer, with the same calibration inputs. Returns why
        it fell back, or None."""
        import litert_torch

        batches = calibration if calibration is not None else calibration_inputs(example_inputs)
        try:
            model, kwargs = self._quantized(module, example_inputs, batches)
            litert_torch.convert(model, example_inputs, **kwargs).export(str(out))
            require_int8_tensors(int8_tensors(out), "the int8 LiteRT model", module)
            return None
        except Exception as e:
            if storage_fault(e, out) is not None:
                raise
            reason = first_line(e)
        litert_torch.convert(module.eval(), example_inputs).export(str(out))
        ai_edge_quantize(out, batches)
        require_int8_tensors(int8_tensors(out), "the int8 LiteRT model (ai-edge-quantizer)", module)
        return reason

    def _quantized(self, module: torch.nn.Module, example_inputs: Inputs,
                   calibration: Sequence[Inputs]) -> tuple[torch.nn.Module, dict[str, Any]]:
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        graph = pt2e_quantize(module, example_inputs, quantizer, calibration, fold_quantize=False)
        return graph, {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}


def int8_tensors(path: Path) -> int:
    """How many tensors of the flatbuffer are 8-bit integers (read by LiteRT's own interpreter)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return sum(1 for t in details if t["dtype"] in (np.int8, np.uint8))


def ai_edge_quantize(path: Path, calibration: Sequence[Inputs]) -> None:
    """The float flatbuffer at `path`, quantized in place by ai-edge-quantizer's static int8 recipe
    (int8 weights and activations), its ranges calibrated on `calibration`."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    (name, signature), = Interpreter(model_path=str(path)).get_signature_list().items()
    q = quantizer.Quantizer(path.read_bytes(), recipe.static_wi8_ai8())
    samples = [dict(zip(signature["inputs"], (t.numpy() for t in batch))) for batch in calibration]
    path.write_bytes(bytes(q.quantize(q.calibrate({name: samples}), enable_progress_report=False).quantized_model))


def _channels_last(inputs: Inputs) -> Inputs:
    return tuple(x.permute(0, 2, 3, 1).contiguous() for x in inputs)


def _tensor(detail: dict[str, Any]) -> dict[str, Any]:
    """One input or output as the sidecar states it: an int8 one with the scale and zero point
    that turn it into the float it stands for (float = scale * (q - zero_point))."""
    d = {"name": detail["name"], "shape": [int(n) for n in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        d["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return d


def _details(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The flatbuffer's input and output details, as LiteRT's interpreter reads them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return it.get_input_details(), it.get_output_details()


def _io(path: Path) -> list[dict[str, Any]]:
    inputs, outputs = _details(path)
    return inputs + outputs


def int8_interface(path: Path) -> list[dict[str, Any]]:
    """An int8 model's input and output made int8 by TFLite's own modify_model_interface tool
    (bundled with ai_edge_litert), where the converter left them float; returns the new details."""
    from ai_edge_litert import _pywrap_modify_model_interface as tool
    from ai_edge_litert import schema_py_generated as fb

    if tool.modify_model_interface(str(path), str(path), fb.TensorType.INT8, fb.TensorType.INT8) != 0:
        raise PipelineError("LiteRT's modify_model_interface could not make this model's input and output int8: "
                            "pass --io float")
    return _io(path)


def float_interface(path: Path) -> list[dict[str, Any]]:
    """An int8 model whose converter made its input or output int8 given float ones again: a
    QUANTIZE after each int8 input and a DEQUANTIZE before each int8 output, with the scale and
    zero point the converter chose (what TFLite's converter writes for a float interface)."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    graph = model.subgraphs[0]
    graph.inputs, graph.outputs = [int(i) for i in graph.inputs], [int(i) for i in graph.outputs]
    for k, i in enumerate(graph.inputs):
        if graph.tensors[i].type == fb.TensorType.INT8:
            graph.inputs[k] = _float_twin(model, graph, i, fb.BuiltinOperator.QUANTIZE, first=True)
    for k, i in enumerate(graph.outputs):
        if graph.tensors[i].type == fb.TensorType.INT8:
            graph.outputs[k] = _float_twin(model, graph, i, fb.BuiltinOperator.DEQUANTIZE, first=False)
    _write(path, model)
    return _io(path)


def _float_twin(model: Any, graph: Any, index: int, op: int, first: bool) -> int:
    """A float tensor beside int8 tensor `index`, joined to it by `op`; signatures point to it."""
    from ai_edge_litert import schema_py_generated as fb

    quantized = graph.tensors[index]
    twin = fb.TensorT()
    twin.shape, twin.type, twin.name, twin.buffer = quantized.shape, fb.TensorType.FLOAT32, quantized.name, 0
    quantized.name = (quantized.name.decode() if isinstance(quantized.name, bytes) else quantized.name) + "_int8"
    graph.tensors.append(twin)
    new = len(graph.tensors) - 1
    step = fb.OperatorT()
    step.opcodeIndex = _opcode(model, op)
    step.inputs, step.outputs = ([new], [index]) if first else ([index], [new])
    graph.operators = [step] + graph.operators if first else graph.operators + [step]
    for sig in model.signatureDefs or []:
        for t in (sig.inputs or []) + (sig.outputs or []):
            if t.tensorIndex == index:
                t.tensorIndex = new
    return new


def _opcode(model: Any, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as fb

    for k, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return k
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = 2  # QUANTIZE to int8 and DEQUANTIZE from int8 are version 2 of each
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def add_metadata(path: Path, name: str, data: bytes) -> None:
    """`data` as the model's metadata entry `name` (replacing one of that name), written with
    ai_edge_litert's flatbuffer schema; LiteRT's Interpreter ignores entries it does not know."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [m for m in model.metadata or [] if _text(m.name) != name] + [entry]
    _write(path, model)


def read_metadata(path: Path, name: str) -> bytes | None:
    """The bytes of the model's metadata entry `name`, or None."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    for m in model.metadata or []:
        if _text(m.name) == name:
            return bytes(np.asarray(model.buffers[m.buffer].data, dtype=np.uint8))
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _write(path: Path, model: Any) -> None:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
