"""Core ML ML Programs (`.mlpackage`) through coremltools from `torch.export`, for `ios`.

Conversion works on Linux; running a model needs macOS (coremltools' `libcoremlpython`), so
here every artifact is at least reloaded and its interface checked against the module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from export.app import METADATA_KEY, AppInterface, PixelClassifier, Probabilities, fold_input_scale
from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters, quiet_import
from export.quantize import (Inputs, Quantization, activation_quantization_here, calibration_inputs,
                             describe_calibration, require_int8_tensors)
from core.errors import PipelineError, first_line
from core.fileio import atomic_dir

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
PRECISIONS = ("fp16", "fp32")  # compute precisions (both the converter's and the ExecuTorch delegate's)
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")  # ML Programs need iOS15 or later
# 8-bit weights are `constexpr` ops from iOS16; 8-bit activations (quantize/dequantize on
# activations) from iOS17. Compute stays fp16 in both.
QUANTIZED_SINCE = {"w8": "iOS16", "int8": "iOS17"}
COREML_SCHEME = {"w8": "int8 linear symmetric weights per output channel; fp16 activations",
                 "int8": "int8 linear symmetric weights per output channel; int8 linear symmetric activations"}


def check_coreml_settings(deployment_target: str, precision: str, compute_units: str) -> None:
    """Validate the user's strings without importing coremltools (it may not be installed)."""
    for what, value, valid in (("precision", precision, PRECISIONS), ("compute_units", compute_units, COMPUTE_UNITS),
                               ("minimum_deployment_target", deployment_target, DEPLOYMENT_TARGETS)):
        if value not in valid:
            raise PipelineError(f"Core ML option {what}='{value}' is not one of {', '.join(valid)}")


def coreml_settings(deployment_target: str, precision: str, compute_units: str) -> tuple[Any, Any, Any]:
    """The user's strings as coremltools enums."""
    check_coreml_settings(deployment_target, precision, compute_units)
    ct = quiet_import("coremltools")

    prec = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    return getattr(ct.target, deployment_target), prec, ct.ComputeUnit[compute_units]


@dataclass(frozen=True)
class CoreMLOptions:
    minimum_deployment_target: str = "iOS16"
    precision: str = "fp16"


@EXPORTERS.register("coreml")
class CoreMLExporter(Exporter):
    name = "coreml"
    format = "mlpackage"
    suffix = ".mlpackage"
    Options = CoreMLOptions
    modules = ("coremltools",)
    extra = "ios"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        check_coreml_settings(self.options.minimum_deployment_target, self._compute_precision(), "ALL")

    def precisions(self) -> tuple[str, ...]:
        since = DEPLOYMENT_TARGETS.index
        target = since(self.options.minimum_deployment_target) if self.options.minimum_deployment_target in \
            DEPLOYMENT_TARGETS else 0
        return PRECISIONS + tuple(p for p, v in QUANTIZED_SINCE.items() if target >= since(v))

    def _for(self) -> str:
        return f" for {self.options.minimum_deployment_target}"

    def _compute_precision(self) -> str:
        return "fp16" if self.precision in QUANTIZED_SINCE else self.precision

    def unavailable_reason(self) -> str | None:
        return activation_quantization_here() if self.precision == "int8" else None

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        if self.precision not in QUANTIZED_SINCE:
            return None
        if self.precision == "w8":
            return Quantization("w8", "coremltools.optimize.coreml.linear_quantize_weights", COREML_SCHEME["w8"], "")
        return Quantization("int8", "coremltools.optimize.coreml.linear_quantize_activations + "
                            "linear_quantize_weights", COREML_SCHEME["int8"], describe_calibration(calibration))

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "coremltools": package_version("coremltools")}

    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None, app: AppInterface | None = None) -> Artifact:
        reason = self.unavailable_reason()
        if reason is not None:
            raise PipelineError(reason)
        with atomic_dir(path) as tmp, quiet_converters():
            try:
                model = self._convert(module, example_inputs, app)
                if self.precision in QUANTIZED_SINCE:
                    model = self._quantized(model, example_inputs, calibration, app)
                    require_int8_tensors(int8_weights(model.get_spec()), "the 8-bit Core ML model", module)
                if app is not None:
                    describe(model, app)
                model.save(str(tmp))
            except PipelineError:
                raise
            except Exception as e:
                raise conversion_error("Core ML conversion", e, path) from e
        artifact = self.artifact(path, example_inputs)
        self.inspect(artifact)
        return artifact

    def _convert(self, module: torch.nn.Module, example_inputs: Inputs, app: AppInterface | None) -> Any:
        """A plain tensor model; with `app`, an image classifier: Core ML scales the image's pixels
        by the normalisation (its std folded into the first convolution where it differs per
        channel), and the output is the class probabilities under the app's labels."""
        import coremltools as ct

        target, precision, _ = coreml_settings(self.options.minimum_deployment_target, self._compute_precision(), "ALL")
        kwargs: dict[str, Any] = {}
        if app is None:
            inputs = [ct.TensorType(name=f"input_{i}" if i else "input", shape=tuple(x.shape))
                      for i, x in enumerate(example_inputs)]
        else:
            scale, bias, factors = app.normalization.image_scale_bias()
            module = Probabilities(fold_input_scale(module, factors))
            inputs = [ct.ImageType(name="image", shape=tuple(example_inputs[0].shape), scale=scale,
                                   bias=bias[0] if app.channels == 1 else bias,
                                   color_layout=getattr(ct.colorlayout, app.color))]
            kwargs["classifier_config"] = ct.ClassifierConfig(list(app.labels))
        program = torch.export.export(module.eval(), example_inputs).run_decompositions({})
        return ct.convert(program, inputs=inputs, convert_to="mlprogram", minimum_deployment_target=target,
                          compute_precision=precision, **kwargs)

    def app_reference(self, module: torch.nn.Module,
                      app: AppInterface) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        return PixelClassifier(module, app.normalization), app.normalization.to_pixels

    def interface(self, artifact: Artifact) -> dict[str, Any]:
        spec = self._spec(artifact)
        inputs = []
        for i in spec.description.input:
            if i.type.WhichOneof("Type") == "imageType":
                t = i.type.imageType
                color = type(t).ColorSpace.Name(t.colorSpace)
                inputs.append({"name": i.name, "image": {"width": t.width, "height": t.height, "color": color},
                               "meaning": "the image itself: Core ML resizes nothing, so pass it at this size"})
            else:
                inputs.append({"name": i.name, "shape": [int(d) for d in i.type.multiArrayType.shape]})
        label, probs = spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName
        outputs = [{"name": o.name, "meaning": "the most probable label" if o.name == label else
                    "each label's probability" if o.name == probs else "logits"} for o in spec.description.output]
        return {"inputs": inputs, "outputs": outputs}

    def _quantized(self, model: Any, example_inputs: Inputs, calibration: Sequence[Inputs] | None,
                   app: AppInterface | None) -> Any:
        from coremltools.optimize import coreml as cto

        if self.precision == "int8":  # activations first: their calibration runs the float model
            batches = calibration if calibration is not None else calibration_inputs(example_inputs)
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
            samples = [{"input": b[0].numpy()} if app is None else {"image": pil_image(app.normalization.to_pixels(b[0]))}
                       for b in batches]
            model = cto.linear_quantize_activations(model, config, samples)
        weights = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))
        return cto.linear_quantize_weights(model, weights)

    def _spec(self, artifact: Artifact) -> Any:
        ct = quiet_import("coremltools")
        try:
            with quiet_converters(fds=False):
                return ct.models.MLModel(str(artifact.path), skip_model_load=True).get_spec()
        except Exception as e:
            raise PipelineError(
                f"Core ML package '{artifact.path}' cannot be read ({first_line(e)}); it is corrupt: export it again"
            ) from None

    def inspect(self, artifact: Artifact) -> None:
        """Reload the package with coremltools (no prediction: that needs macOS) and check
        that its declared input shapes are the module's and it has an output."""
        spec = self._spec(artifact)
        declared = [input_shape(i) for i in spec.description.input]
        if declared != list(artifact.input_shapes) or not spec.description.output:
            raise PipelineError(
                f"Core ML package '{artifact.path}' declares inputs {declared}, expected "
                f"{list(artifact.input_shapes)}; export it again"
            )


def input_shape(feature: Any) -> tuple[int, ...]:
    """A Core ML input's shape as NCHW: an image's (1, channels, height, width)."""
    if feature.type.WhichOneof("Type") == "imageType":
        t = feature.type.imageType
        return (1, 1 if type(t).ColorSpace.Name(t.colorSpace) == "GRAYSCALE" else 3, int(t.height), int(t.width))
    return tuple(int(d) for d in feature.type.multiArrayType.shape)


def pil_image(pixels: torch.Tensor | Any) -> Any:
    """A (1, C, H, W) array of 0-255 pixels as the PIL image a Core ML image input takes."""
    import numpy as np
    from PIL import Image

    a = np.clip(np.asarray(pixels, dtype=np.float32)[0], 0, 255).round().astype(np.uint8)
    return Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")


def coreml_feed(spec: Any, arrays: list[Any]) -> dict[str, Any]:
    """Inputs by name, in what each takes: an image input a PIL image of the array's pixels."""
    return {f.name: pil_image(a) if f.type.WhichOneof("Type") == "imageType" else a
            for f, a in zip(spec.description.input, arrays)}


def coreml_outputs(spec: Any, out: dict[str, Any]) -> list[Any]:
    """A prediction's outputs as arrays: a classifier's probabilities in its labels' order (its
    label output, a string, is left out)."""
    import numpy as np

    d = spec.description
    if d.predictedProbabilitiesName:
        probs = out[d.predictedProbabilitiesName]
        return [np.asarray([[probs[k] for k in class_labels(spec)]], dtype=np.float32)]
    return [np.asarray(out[o.name], dtype=np.float32) for o in d.output]


def class_labels(spec: Any) -> list[str]:
    """An ML Program classifier's labels, as its `classify` op holds them (empty for no classifier)."""
    for op in _operations(spec):
        if op.type == "classify":
            values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
            return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []


def _operations(spec: Any) -> list[Any]:
    return [op for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
            for op in b.operations]


def describe(model: Any, app: AppInterface) -> None:
    """Core ML's own metadata: what Xcode shows on the model's page and uses for its preview."""
    import json

    model.short_description = app.description
    model.version = app.version
    model.author = "fbnet-pipeline"
    model.input_description["image"] = (f"a {app.resolution}x{app.resolution} {app.color} image; Core ML scales its "
                                        "pixels as the network was trained")
    model.user_defined_metadata["com.apple.coreml.model.preview.type"] = "imageClassifier"
    model.user_defined_metadata[METADATA_KEY] = json.dumps(app.facts())


def int8_weights(spec: Any) -> int:
    """How many weights of an ML Program are stored as 8-bit integers (constexpr dequantize ops)."""
    return sum(1 for op in _operations(spec) if op.type.startswith("constexpr_") and "dequantize" in op.type
               or op.type == "constexpr_blockwise_shift_scale")
