"""Models an app can use as they are: the labels and preprocessing inside each model where its
format has a place for them and in a sidecar JSON; Core ML as an image classifier; LiteRT with
NHWC input and float or int8 input and output. Read back with each format's own tools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blocks.network import DerivedNet
from blocks.space import resolve_space
from export.app import METADATA_KEY, AppInterface, Normalization, PixelClassifier, fold_input_scale
from tests.conftest import MICRO_SPACE

RGB = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # per-channel std: folded into the stem
LABELS = tuple(f"class {i}" for i in range(10))


def _net(tmp_path: Path, channels: int) -> DerivedNet:
    space_file = tmp_path / "micro.yaml"
    space_file.write_text(MICRO_SPACE.replace("in_channels: 1", f"in_channels: {channels}"))
    space = resolve_space(str(space_file))
    torch.manual_seed(0)
    net = DerivedNet(space, ("k3_e6", "k5_e3", "k3_e1"), 10).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    return net


def _app(channels: int, norm: Normalization, **kw) -> AppInterface:
    return AppInterface(LABELS, 16, channels, norm, description="a test model", version="0.1.0",
                        source={"blocks": ["k3_e6"]}, **kw)


def test_the_normalisation_folds_into_the_first_convolution_exactly(tmp_path: Path) -> None:
    net = _net(tmp_path, 3)
    pixels = torch.randint(0, 256, (2, 3, 16, 16)).float()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (RGB.mean, RGB.std))
    with torch.no_grad():
        expected = torch.softmax(net((pixels / 255 - mean) / std), -1)
        got = PixelClassifier(net, RGB)(pixels)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        # one scale for the image, the rest in the stem's weights: the network itself is untouched
        scale, bias, factors = RGB.image_scale_bias()
        assert scale == pytest.approx(1 / (255 * 0.229)) and factors == pytest.approx((1.0, 0.229 / 0.224, 0.229 / 0.225))
        folded = fold_input_scale(net, factors)
        assert not torch.equal(folded.stem[0].weight, net.stem[0].weight)
        # where no convolution comes first, a leading multiply does the same
        plain = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        x = torch.randn(1, 3, 16, 16)
        torch.testing.assert_close(fold_input_scale(plain, factors)(x), plain(x * torch.tensor(factors).view(1, 3, 1, 1)))
    assert torch.equal(RGB.to_pixels((pixels / 255 - mean) / std), pixels)


@pytest.mark.slow
def test_core_ml_ships_an_image_classifier_with_labels_and_metadata(tmp_path: Path) -> None:
    import coremltools as ct

    from export.coreml import CoreMLExporter, class_labels, coreml_feed, coreml_outputs

    net = _net(tmp_path, 3)
    x = torch.randn(1, 3, 16, 16)
    exporter = CoreMLExporter(precision="fp32")
    artifact = exporter.export(net, (x,), tmp_path / "model.mlpackage", app=_app(3, RGB))
    spec = ct.models.MLModel(str(artifact.path), skip_model_load=True).get_spec()
    image = spec.description.input[0]
    assert image.name == "image" and image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (16, 16)
    assert ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.type.imageType.colorSpace) == "RGB"
    assert class_labels(spec) == list(LABELS)
    assert spec.description.predictedFeatureName == "classLabel"
    meta = spec.description.metadata
    assert meta.shortDescription == "a test model" and meta.versionString == "0.1.0"
    assert meta.userDefined["com.apple.coreml.model.preview.type"] == "imageClassifier"
    facts = json.loads(meta.userDefined[METADATA_KEY])
    assert facts["labels"] == list(LABELS) and facts["preprocessing"]["std"] == list(RGB.std)
    # the image's one scale and per-channel bias are in the program
    ops = [op for f in spec.mlProgram.functions.values() for b in f.block_specializations.values() for op in b.operations]
    assert {"mul", "add", "softmax", "classify"} <= {op.type for op in ops}
    io = exporter.interface(artifact)
    assert io["inputs"][0]["image"] == {"width": 16, "height": 16, "color": "RGB"}
    assert [o["name"] for o in io["outputs"]] == ["classLabel", "classLabel_probs"]
    # what the macOS runner and the iPhone agent feed it, and read back
    feed = coreml_feed(spec, [np.full((1, 3, 16, 16), 300.0, np.float32)])
    assert feed["image"].mode == "RGB" and feed["image"].size == (16, 16) and feed["image"].getpixel((0, 0)) == (255,) * 3
    probs = coreml_outputs(spec, {"classLabel": "class 1", "classLabel_probs": {k: float(i) for i, k in enumerate(LABELS)}})
    assert probs[0].tolist() == [list(map(float, range(10)))]


@pytest.mark.slow
def test_litert_takes_nhwc_and_an_int8_model_float_or_int8_io(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from benchmarks.runners.litert import from_tensor, to_tensor
    from export.litert import LiteRTExporter, read_metadata

    net = _net(tmp_path, 1)
    norm = Normalization((0.5,), (0.5,))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 16, 16, generator=g)
    calibration = [(torch.randn(1, 1, 16, 16, generator=g),) for _ in range(8)]

    def run(path: Path, inputs: np.ndarray) -> tuple[np.ndarray, dict, dict]:
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        it.set_tensor(i["index"], to_tensor(inputs, i))
        it.invoke()
        return from_tensor(it.get_tensor(o["index"]), o), i, o

    fp32 = LiteRTExporter().export(net, (x,), tmp_path / "nhwc.tflite", app=_app(1, norm, layout="NHWC"))
    assert fp32.input_shapes == ((1, 16, 16, 1),)
    out, i, _ = run(fp32.path, x.permute(0, 2, 3, 1).numpy())
    assert list(i["shape"]) == [1, 16, 16, 1]
    with torch.no_grad():
        np.testing.assert_allclose(out, net(x).numpy(), atol=1e-4)
    assert json.loads(read_metadata(fp32.path, METADATA_KEY))["labels"] == list(LABELS)

    int8 = LiteRTExporter(precision="int8")
    models = {io: int8.export(net, (x,), tmp_path / f"{io}.tflite", calibration, _app(1, norm, io=io)).path
              for io in ("float", "int8")}
    (as_float, fi, fo), (as_int8, qi, qo) = (run(models[io], x.numpy()) for io in ("float", "int8"))
    assert (fi["dtype"], fo["dtype"], qi["dtype"], qo["dtype"]) == (np.float32, np.float32, np.int8, np.int8)
    np.testing.assert_array_equal(as_float, as_int8)  # the same int8 graph: only where the edges quantize differs
    sidecar = int8.interface(int8.artifact(models["int8"], (x,)))
    assert sidecar["inputs"][0]["quantization"]["scale"] == pytest.approx(float(qi["quantization"][0]))
    assert json.loads(read_metadata(models["float"], METADATA_KEY))["preprocessing"]["formula"].startswith("x[c] =")


def held_out_accuracy(model: Path, run) -> float:
    """The model's top-1 accuracy on the digits' held-out split, run by `run(array) -> logits`,
    its inputs prepared from the raw images by what the model's sidecar JSON states alone."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from pipeline.training.data import load_data

    side = json.loads(model.with_suffix(".json").read_text())
    pre = side["preprocessing"]
    digits = load_digits()
    test = load_data("digits", pre["resize"][0], len(pre["mean"]), 0).test.indices  # which images, not how
    mean, std = (torch.tensor(pre[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    right = 0
    for i in test:
        pixels = torch.tensor(digits.images[i] * 255 / 16, dtype=torch.float32)[None, None]
        x = F.interpolate(pixels / 255, size=tuple(pre["resize"]), mode="bilinear", align_corners=False)
        x = ((x.expand(1, len(pre["mean"]), -1, -1) - mean) / std).contiguous()
        x = x.permute(0, 2, 3, 1).contiguous() if pre["layout"] == "NHWC" else x
        right += side["labels"][int(np.argmax(run(x.numpy())))] == str(digits.target[i])
    return right / len(test)


def official_runtime(model: Path):
    """The model's own runtime, as an app would call it, without this project's runners."""
    if model.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]
    if model.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(model))
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]

        def run(x: np.ndarray) -> np.ndarray:
            it.set_tensor(i["index"], x)
            it.invoke()
            return it.get_tensor(o["index"])

        return run
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(model)).load_method("forward")
    return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()
