"""The exporter interface every format implements, the exporter registry, and shared helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import io
import logging
import os
import sys
import tempfile
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch

from core.config import build_config
from core.errors import PipelineError, first_line
from core.fileio import storage_fault
from core.registry import Registry
from export.app import AppInterface
from export.quantize import Inputs, Quantization, check_precision
from export.verify import MISTRANSLATED


@dataclass(frozen=True)
class Artifact:
    """A file (or `.mlpackage` folder) an exporter wrote, with what a runner needs to feed it."""

    path: Path
    format: str
    exporter: str
    input_shapes: tuple[tuple[int, ...], ...]


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` cannot be imported here (without importing them: they are heavy)."""
    missing = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                missing.append(m)
        except (ImportError, ValueError):
            missing.append(m)
    return missing


class Exporter(ABC):
    """Turns a plain `nn.Module` and example inputs into one artifact in the target's format."""

    name: ClassVar[str]
    format: ClassVar[str]
    suffix: ClassVar[str]
    Options: ClassVar[type]  # a frozen dataclass of this exporter's keyword options
    # Python modules the conversion imports, and the pip extra that installs them.
    modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        # Unknown or ill-typed options fail here, naming the option, before any work starts.
        self.options = build_config(self.Options, options, f"{self.name} exporter options")
        check_precision(self.precision, self.precisions(), f"the {self.name} exporter{self._for()}")

    def _for(self) -> str:
        """What narrows the precisions beyond the format (a delegate, a deployment target), for errors."""
        return ""

    @property
    def precision(self) -> str:
        """The precision its artifacts run at (`export.quantize.PRECISIONS`)."""
        return str(getattr(self.options, "precision", "fp32"))

    def precisions(self) -> tuple[str, ...]:
        """The precisions this format (with these options) can export, the default first."""
        return ("fp32",)

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        """How an 8-bit artifact is quantized (None for a float precision); `calibration` as
        `export` gets it."""
        return None

    def has_layout_edges(self) -> bool:
        """Does a model in this format convert layout at its edges (NCHW in and out, NHWC inside)?
        Then every block timed alone pays that conversion, an identity (an empty graph) does not,
        and a whole network pays it once: benchmark prices identities with no-op layers
        (`benchmarks.boundary`). Where it does not, those layers would price a runtime's own
        first-conv cost instead: on ONNX Runtime here they made predictions worse."""
        return False

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the exported bytes: used as part of the artifact cache key."""
        return {"exporter": self.name, "versions": self.versions(), **dataclasses.asdict(self.options)}

    @classmethod
    def missing(cls) -> list[str]:
        return missing_modules(cls.modules)

    def unavailable_reason(self) -> str | None:
        """Why this machine cannot export with these options (beyond missing modules), or None."""
        return None

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the converter packages, recorded in tables and cache keys."""

    @abstractmethod
    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None, app: AppInterface | None = None) -> Artifact:
        """Write `module` to `path` (atomically) and describe the result. An 8-bit precision
        calibrates its activations on `calibration`, or where None on seeded random inputs of the
        example inputs' shapes (`export.quantize.calibration_inputs`). With `app`, the model is
        the one an app ships: its interface as `app_reference` computes it, its facts inside it
        where the format has a place for them. `example_inputs` and `calibration` are always the
        network's own (normalised NCHW)."""

    def layouts(self) -> tuple[str, ...]:
        """The input layouts an app model of this format can take (`export.app.LAYOUTS`)."""
        return ("NCHW",)

    def io_types(self) -> tuple[str, ...]:
        """The element types an app model's input and output can have (`export.app.IO_TYPES`)."""
        return ("float",)

    def check_app(self, app: AppInterface) -> None:
        for what, value, valid, flag in (("input layout", app.layout, self.layouts(), "--layout"),
                                         ("input and output type", app.io, self.io_types(), "--io")):
            if value not in valid:
                raise PipelineError(f"the {self.name} exporter{self._for()} at {self.precision} has no {what} "
                                    f"'{value}'; it has {', '.join(valid)}: pass {flag} {valid[0].lower()}")

    def app_reference(self, module: torch.nn.Module,
                      app: AppInterface) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """What the app model computes, in PyTorch, and how the network's input (normalised NCHW)
        becomes the app model's input: to check and time the model as it ships."""
        return module, lambda x: x

    def interface(self, artifact: Artifact) -> dict[str, Any]:
        """The model's input and output tensors as the sidecar states them, read from the model
        where this machine can read it."""
        return {"inputs": [{"name": "input", "shape": list(s), "dtype": "float32"} for s in artifact.input_shapes],
                "outputs": [{"name": "output", "dtype": "float32", "meaning": "logits"}]}

    def mismatch_cause(self) -> str:
        """Why this exporter's artifact, run by this machine's runtime, would differ from PyTorch."""
        return MISTRANSLATED

    def inspect(self, artifact: Artifact) -> None:
        """Check an artifact that no runtime here can execute (raise PipelineError if it is bad)."""

    def artifact(self, path: Path, inputs: tuple[torch.Tensor, ...]) -> Artifact:
        return Artifact(Path(path), self.format, self.name, tuple(tuple(x.shape) for x in inputs))


EXPORTERS: Registry[type[Exporter]] = Registry("exporter")


def conversion_error(what: str, e: Exception, path: Path) -> PipelineError:
    """A converter's failure, as the one line a table row records as its reason; unless the file
    system refused to write `path` (full, read-only): that is no reason to give up on the row, and
    `storage_fault`'s error stops the run instead."""
    return storage_fault(e, path) or PipelineError(f"{what} failed: {first_line(e)}")


def quiet_import(module: str) -> Any:
    """Import a converter or runtime without the warnings several print at import time
    (untested torch versions, optional native parts missing on this OS)."""
    with quiet_converters():
        return importlib.import_module(module)


@contextlib.contextmanager
def quiet_converters(fds: bool = True) -> Iterator[None]:
    """Converters print progress bars, deprecation notes and C++ logs on every call; a table
    has hundreds of calls. Python-level output is swallowed; with `fds`, so is what native
    code writes to file descriptors 1 and 2 (the caller still gets exceptions)."""
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        loggers = [logging.getLogger(n) for n in ("torch", "executorch", "coremltools", "litert_torch", "absl", "")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        if fds:
            stack.enter_context(_silence_fds())
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextlib.contextmanager
def _silence_fds() -> Iterator[None]:
    sys.stdout.flush(), sys.__stderr__.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
