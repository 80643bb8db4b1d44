"""Where outputs go by default: one folder, laid out by space, target and device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import PipelineError


def check_folder(path: Path, option: str) -> None:
    """Refuse a folder to write into that is a file, or lies inside one, before any work starts
    (creating a folder there later would fail with the OS's NotADirectoryError)."""
    for p in (path, *path.parents):
        if p.is_dir():
            return
        if p.exists():
            where = "is a file" if p == path else f"lies inside '{p}', which is a file"
            raise PipelineError(f"{option} '{path}' {where}; give a folder")


@dataclass(frozen=True)
class Workspace:
    root: Path = Path("pipeline-out")

    def __post_init__(self) -> None:
        check_folder(Path(self.root), "--out")

    def table(self, space: str, target: str, device: str) -> Path:
        return self.root / "tables" / space / target / f"{device}.json"

    def search_dir(self, space: str, target: str, device: str) -> Path:
        return self.root / "search" / space / target / device

    def architecture(self, space: str, target: str, device: str) -> Path:
        return self.search_dir(space, target, device) / "architecture.json"

    def export_dir(self, space: str, target: str, device: str) -> Path:
        return self.root / "export" / space / target / device

    @property
    def cache(self) -> Path:
        return self.root / "cache"


def weights_path(arch_path: Path, kind: str) -> Path:
    """Weights live beside their architecture: `<stem>.supernet.pt` or `<stem>.trained.pt`."""
    return arch_path.with_name(f"{arch_path.stem}.{kind}.pt")
