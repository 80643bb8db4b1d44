"""Faults a user meets, through the real `pipeline` CLI: a full disk while benchmarking or
searching, a refused write, `--out` naming a file, garbage given as a checkpoint or weights, two
searches writing into one folder. Each must end as one line on stderr and a non-zero exit, lose
nothing already saved and leave no partial file.

A full disk is made with /dev/full: the file a write is aimed at is opened there instead, so the
kernel itself answers the write with ENOSPC, as a full disk does."""

from __future__ import annotations

import builtins
import errno
import fnmatch
import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmarks.table import load_table, required_rows
from core.errors import DiskFull, PipelineError, StorageError
from core.fileio import output_lock, storage_fault, write_json_atomic
from pipeline.cli import main
from tests.conftest import make_table

ROOT = Path(__file__).resolve().parents[1]
QUICK_TIMING = ["--repeats", "3", "--min-repeat-ms", "0.1", "--no-reference", "--row-timeout", "0", "--jobs", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line(r) -> str:
    """The run failed with exactly one line on stderr (no traceback); that line."""
    lines = r.stderr.strip().splitlines()
    assert r.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(pattern, after)`: writes to files whose name matches `pattern` go to /dev/full
    (ENOSPC) once `after` such files have been written normally; `full_disk(None)`: room again."""
    real = io.open

    def arm(pattern: str | None, after: int = 0) -> None:
        left = [after]

        def opener(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax") \
                    and fnmatch.fnmatch(Path(file).name, pattern):
                if left[0] <= 0:
                    return real("/dev/full", mode, *a, **k)
                left[0] -= 1
            return real(file, mode, *a, **k)

        monkeypatch.setattr(builtins, "open", real if pattern is None else opener)
        monkeypatch.setattr(io, "open", real if pattern is None else opener)

    return arm


@pytest.fixture
def images(tmp_path) -> Path:
    """A tiny image folder (3 classes of 6): a search of an epoch takes a fraction of a second."""
    g = random.Random(0)
    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.frombytes("L", (16, 16), g.randbytes(256)).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    return tmp_path / "imgs"


@pytest.fixture
def searchable(tmp_path, micro_space_file, micro_space, images):
    """Arguments of a quick search of the micro space against a hand-made table."""
    table = tmp_path / "table.json"
    make_table(micro_space).save(table)
    out = tmp_path / "ws"
    return out, ["--space", micro_space_file, "--out", out, "--table", table, "--data", images, "-q",
                 "--batch-size", "8"]


def test_storage_fault_finds_the_os_error_a_converter_wrapped_and_leaves_others_alone():
    wrapped = RuntimeError("PytorchStreamWriter failed writing file data/0")
    wrapped.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(storage_fault(wrapped, "/w/tables/t.json"), DiskFull)
    assert str(storage_fault(OSError(errno.EDQUOT, "Disk quota exceeded"), "/w/a.pt")) == (
        "the disk quota is used up on the device holding '/w' (while writing 'a.pt'); free space there or choose "
        "another --out")
    refused = storage_fault(PermissionError(errno.EACCES, "Permission denied", "/w"), "/w/a.pt")
    assert type(refused) is StorageError and "cannot write '/w/a.pt': permission denied on '/w'" in str(refused)
    assert storage_fault(OSError(errno.ENOENT, "No such file"), "/w/a.pt") is None
    assert storage_fault(ValueError("a converter's own refusal"), "/w/a.pt") is None
    # Export workers hand their errors back pickled: the kind and the message survive.
    back = pickle.loads(pickle.dumps(storage_fault(OSError(errno.ENOSPC, "full"), "/w/x.onnx")))
    assert type(back) is DiskFull and "'/w'" in str(back)


def test_a_refused_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    write_json_atomic(target, {"rows": 1})

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError, match=r"cannot write '.*t\.json': permission denied; make it writable"):
        write_json_atomic(target, {"rows": 2})
    assert json.loads(target.read_text()) == {"rows": 1} and os.listdir(tmp_path) == ["t.json"]


def test_the_cli_turns_a_storage_os_error_into_one_line_and_leaves_other_os_errors_a_traceback(monkeypatch):
    from pipeline import flow

    def fail(*a, **k):
        raise failure

    monkeypatch.setattr(flow, "search_or_sweep", fail)
    failure = OSError(errno.ENOSPC, "No space left on device", "/w/search/tmpfile")
    assert one_line(invoke("search")) == ("error: no space left on the device holding '/w/search' (while writing "
                                          "'tmpfile'); free space there or choose another --out; the checkpoint saved "
                                          "before stays whole: run the same command with --resume to continue from it "
                                          "(--sweep goes on by itself)")
    failure = OSError(errno.EROFS, "Read-only file system", "/w/search")
    assert one_line(invoke("search")).startswith("error: '/w/search': read-only file system; check its permissions")
    failure = FileNotFoundError(errno.ENOENT, "No such file or directory", "/w/gone")  # a bug: keeps its traceback
    with pytest.raises(FileNotFoundError):
        invoke("search")


@pytest.mark.slow
def test_a_full_disk_stops_benchmark_keeps_its_rows_and_the_same_command_resumes(tmp_path, micro_space_file,
                                                                                  micro_space, full_disk, monkeypatch):
    monkeypatch.setenv("PIPELINE_TIMING_LOCK", "off")  # what is checked is what is kept, not the figures
    out = tmp_path / "ws"
    args = ["benchmark", "--space", micro_space_file, "--out", out, "-q", *QUICK_TIMING]
    table = out / "tables" / "micro" / "desktop" / "host.json"
    total = len(required_rows(micro_space))

    full_disk(".host.json.*.tmp", after=3)  # the table fills the disk as its 4th row is saved
    line = one_line(invoke(*args))
    assert line.startswith(f"error: no space left on the device holding '{table.parent}' (while writing 'host.json'); "
                           "free space there or choose another --out; the table keeps every row measured so far")
    assert len(load_table(table).rows) == 3

    cache = out / "cache" / "onnx"
    for f in cache.iterdir():
        f.unlink()
    full_disk(".*.onnx.*.tmp", after=2)  # now the exporter's third file does
    line = one_line(invoke(*args))
    assert f"no space left on the device holding '{cache}' (while writing '" in line and "cannot be exported" not in line
    assert len(load_table(table).rows) == 3
    assert len(list(cache.iterdir())) == 2 and not list(out.rglob(".*.tmp*"))  # no partial file

    full_disk(None)
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["rows"], report["measured"], report["unavailable"]) == (total, total - 3, [])



@pytest.mark.slow
def test_a_full_disk_during_search_keeps_the_last_checkpoint_and_resume_finishes(searchable, full_disk):
    out, args = searchable
    checkpoint = out / "search" / "micro" / "desktop" / "host" / "architecture.checkpoint.pt"
    full_disk(".architecture.checkpoint.pt.*.tmp", after=1)  # the save after epoch 2 fills the disk
    line = one_line(invoke("search", *args, "--epochs", 2))
    assert line.startswith(f"error: no space left on the device holding '{checkpoint.parent}' (while writing "
                           "'architecture.checkpoint.pt'); free space there or choose another --out; the checkpoint "
                           "saved before stays whole: run the same command with --resume")
    assert torch.load(checkpoint, weights_only=True)["position"]["epoch"] == 1
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["architecture.checkpoint.pt"]  # no temp, no lock

    full_disk(None)
    r = invoke("search", *args, "--epochs", 2, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(checkpoint.with_name("architecture.json").read_text())["history"]) == 2


def _out_is_a_file_args(tmp_path: Path, space: str) -> dict[str, list]:
    table = tmp_path / "t.json"
    return {"benchmark": ["benchmark", "--space", space],
            "benchmark import": ["benchmark", "import", table, "--target", "desktop", "--device", "pixel1",
                                 "--space", space],
            "search": ["search", "--space", space], "search --sweep": ["search", "--sweep", "lam=0.1,1"],
            "validate": ["validate", "--space", space], "export": ["export", "--space", space],
            "train": ["train", "--space", space], "run": ["run", "--space", space],
            "compare": ["compare", "desktop/host"]}


@pytest.mark.parametrize("command", list(_out_is_a_file_args(Path("."), "tiny")))
def test_out_naming_a_file_is_one_line_for_every_command(tmp_path, micro_space_file, command):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder")
    args = _out_is_a_file_args(tmp_path, str(micro_space_file))[command]
    assert one_line(invoke(*args, "--out", afile)) == f"error: --out '{afile}' is a file; give a folder"
    inside = afile / "sub"
    assert one_line(invoke(*args, "--out", inside)) == (
        f"error: --out '{inside}' lies inside '{afile}', which is a file; give a folder")
    assert afile.read_text() == "not a folder"


def _garbage(kind: str, path: Path, real: Path) -> None:
    if kind.startswith("random"):
        g = random.Random(int(kind[len("random"):]))
        path.write_bytes(g.randbytes(g.randint(1, 5000)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "a zip, not a torch file")
    elif kind == "tensor":
        torch.save(torch.ones(3), path)


# random2 and random14 make torch raise IndexError, the others UnpicklingError
GARBAGE = ["random0", "random2", "random14", "empty", "truncated", "zip", "tensor"]


@pytest.mark.parametrize("kind", GARBAGE)
def test_garbage_given_as_checkpoint_or_weights_is_one_pipeline_error(kind, tmp_path, micro_space):
    from blocks.network import DerivedNet
    from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
    from pipeline.training.weights import load_weights, read_weights_info, save_weights

    blocks = tuple(micro_space.candidates(i)[0] for i in range(len(micro_space.layers)))
    real_weights, real_checkpoint = tmp_path / "real.supernet.pt", tmp_path / "real.checkpoint.pt"
    save_weights(real_weights, DerivedNet(micro_space, blocks, 10), "supernet", 0.5)
    save_checkpoint(real_checkpoint, {"space": "x"}, {"net": torch.zeros(1000)})
    bad = tmp_path / "bad.pt"
    _garbage(kind, bad, real_checkpoint)
    with pytest.raises(PipelineError, match=r"'.*bad\.pt' is (corrupt or )?not a (search )?checkpoint"):
        load_checkpoint(bad, {"space": "x"})
    _garbage(kind, bad, real_weights)
    for read in (lambda: load_weights(bad, micro_space, blocks), lambda: read_weights_info(bad, micro_space, blocks)):
        with pytest.raises(PipelineError, match=r"'.*bad\.pt' is (corrupt or )?not a weights file"):
            read()


def test_search_resume_from_random_bytes_is_one_line(searchable):
    out, args = searchable
    checkpoint = out / "search" / "micro" / "desktop" / "host" / "architecture.checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(random.Random(2).randbytes(3000))  # torch: IndexError
    assert one_line(invoke("search", *args, "--epochs", 1, "--resume")) == (
        f"error: checkpoint '{checkpoint}' is corrupt or not a checkpoint (IndexError); delete it and run the search "
        "without --resume")


def _lock_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@pytest.mark.slow
def test_a_second_search_into_the_same_folder_is_refused_and_a_killed_one_blocks_nothing(searchable):
    out, args = searchable
    arch = out / "search" / "micro" / "desktop" / "host" / "architecture.json"
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "search", *map(str, args), "--epochs", "1000"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _lock_of(arch).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _lock_of(arch).exists(), first.stderr.read() if first.poll() is not None else "no lock after 120 s"
        line = one_line(invoke("search", *args, "--epochs", 1))
        assert line == (f"error: another search is writing '{arch}' (pid {first.pid}: cli.py search "
                        f"{' '.join(map(str, args))} --epochs 1000); wait for it to finish, or write elsewhere: "
                        "another --out or --device")
    finally:
        first.send_signal(signal.SIGKILL)  # no handler, no finally: the lock file stays behind
        first.wait()
    assert _lock_of(arch).exists()
    r = invoke("search", *args, "--epochs", 1)  # the kernel let go of the dead process's lock
    assert r.exit_code == 0, r.stderr
    assert arch.is_file() and not _lock_of(arch).exists()


def test_search_sweep_is_refused_while_another_process_writes_its_folder(searchable):
    out, args = searchable
    sweep = out / "search" / "micro" / "desktop" / "host" / "sweep"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from core.fileio import output_lock\n"
                               "with output_lock(sys.argv[1], 'search --sweep', 'wait'):\n"
                               "    print('held', flush=True); time.sleep(60)", str(sweep)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        line = one_line(invoke("search", *args, "--sweep", "lam=0.1,1", "--epochs", 1))
        assert line.startswith(f"error: another search --sweep is writing '{sweep}' (pid {holder.pid}: -c ")
    finally:
        holder.kill()
        holder.wait()
    with output_lock(sweep, "search --sweep", "wait"):  # free again, though its file stayed
        assert _lock_of(sweep).exists()
    assert not _lock_of(sweep).exists()


@pytest.mark.parametrize("how", ["chmod", "injected"])
def test_a_folder_that_refuses_writes_is_one_line(how, searchable, monkeypatch):
    out, args = searchable
    out.mkdir()
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into any folder")
        out.chmod(0o555)
    else:  # as the OS answers a process without the right to write there
        real = os.mkdir

        def mkdir(path, *a, **k):
            if Path(path).is_relative_to(out):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *a, **k)

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        line = one_line(invoke("search", *args, "--epochs", 1))
    finally:
        out.chmod(0o755)
    assert line.startswith(f"error: cannot write '{out / 'search'}") and "permission denied on" in line
    assert "make it writable or choose another --out" in line
    assert list(out.iterdir()) == []


def test_run_into_a_folder_another_search_writes_is_refused_before_it_benchmarks(tmp_path, micro_space_file):
    out = tmp_path / "ws"
    arch = out / "search" / "micro" / "desktop" / "host" / "architecture.json"
    with output_lock(arch, "search", "write elsewhere"):  # held as a running search holds it
        line = one_line(invoke("run", "--space", micro_space_file, "--out", out))
    assert line.startswith(f"error: another search is writing '{arch}' (pid {os.getpid()}:")
    assert not (out / "tables").exists() and not (out / "cache").exists()  # nothing benchmarked
