"""The measurement agent end to end: a real `pipeline agent` on 127.0.0.1, tables, validation and
export timed through it with `--remote` or a device file, an agent killed mid-table, and the
one-line messages of a client that cannot reach it."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from tests.agent_server import running_agent, start_agent

FAST = ["--repeats", "3", "--min-repeat-ms", "0.5"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _error(r) -> str:
    assert r.exit_code != 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    with running_agent(tmp_path_factory.mktemp("agent")) as a:
        yield a


def _rows(path: Path) -> dict:
    return {r["key"]: r for r in json.loads(path.read_text())["rows"]}


def _blobs(agent) -> dict[str, tuple[int, int]]:
    """Each stored artifact's inode and mtime: an artifact sent again is a new file."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (agent.store / "blobs").iterdir()}


@pytest.mark.slow
def test_tiny_table_through_the_agent_matches_a_local_one(tmp_path, agent):
    out = tmp_path / "ws"
    timing = ["--repeats", "5", "--min-repeat-ms", "1"]  # each row against the reference beside it, 5 times
    local = invoke("benchmark", "--space", "tiny", "--out", out, "-q", "--json", *timing)
    assert local.exit_code == 0, local.output
    # the exports are cached now, so the remote build only times: nothing competes for the cores
    remote = invoke("benchmark", "--space", "tiny", "--out", out, "-q", "--json", "--remote", agent.url,
                    "--token-file", agent.token_file, *timing)
    assert remote.exit_code == 0, remote.output
    loc, rem = json.loads(local.output), json.loads(remote.output)
    device = rem["device"]
    assert rem["table"].endswith(f"tables/tiny/desktop/{device}.json") and rem["measured"] == loc["measured"] == 57
    assert loc["agent"] is None and rem["agent"] == {"url": agent.url, "device": device, "artifacts_sent": 57}
    table = json.loads(Path(rem["table"]).read_text())
    p = table["provenance"]
    assert p["device"] == device and p["host"]["agent"] == agent.url and p["host"]["backend"] == "local"
    assert p["runtime"] == "onnxruntime" and p["runtime_version"] == p["host"]["runtimes"]["onnxruntime"]
    # every row checked against PyTorch with the outputs the agent's runtime computed
    local_rows, remote_rows = _rows(Path(loc["table"])), _rows(Path(rem["table"]))
    assert all(r["status"] == "ok" and r["max_abs_err"] < 1e-4 for r in remote_rows.values())
    # Rows are judged by their ratio to the reference row timed beside them: the machine's speed
    # drifts between the two builds, the ratio does not (docs/measurement.md).
    ratios = [remote_rows[k]["ratio"] / local_rows[k]["ratio"] for k in local_rows if "ratio" in local_rows[k]]
    assert len(ratios) == 57
    assert 0.8 <= statistics.median(ratios) <= 1.25, ratios

    before = _blobs(agent)
    again = invoke("benchmark", "--space", "tiny", "--out", out, "-q", "--force", "--remote", agent.url,
                   "--token-file", agent.token_file, "--json", *FAST)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["agent"]["artifacts_sent"] == 0
    assert _blobs(agent) == before  # nothing sent again, so nothing stored again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_agent_killed_mid_table_then_restarted_loses_nothing(tmp_path, micro_space_file):
    folder, out, port = tmp_path / "agent", tmp_path / "ws", _free_port()
    agent = start_agent(folder, port=port)
    try:
        cmd = [sys.executable, "-m", "pipeline.cli", "benchmark", "--space", "tiny", "--out", str(out), "-q",
               "--remote", agent.url, "--token-file", str(agent.token_file), *FAST]
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        table = out / "tables/tiny/desktop"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and client.poll() is None:
            files = list(table.glob("*.json")) if table.is_dir() else []
            if files and len(_rows(files[0])) >= 10:
                break
            time.sleep(0.2)
        agent.kill()
        _, err = client.communicate(timeout=120)
        assert client.returncode != 0 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith(f"error: the agent at {agent.url} does not answer"), err
        kept = _rows(next(table.glob("*.json")))
        assert 10 <= len(kept) < 57 and all(r["status"] == "ok" for r in kept.values())

        agent = start_agent(folder, port=port)  # the same store and token
        r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["measured"] == 57 - len(kept) and report["reused"] == len(kept)
        now = _rows(Path(report["table"]))
        assert len(now) == 57 and all(now[k]["samples_ms"] == row["samples_ms"] for k, row in kept.items())
    finally:
        agent.stop()


def _device_file(out: Path, agent, name: str = "lab") -> Path:
    path = out / "devices" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"url": agent.url, "token_file": str(agent.token_file)}))
    return path


def test_device_file_names_the_agent_for_benchmark_search_validate_and_export(tmp_path, agent, micro_space_file):
    out = tmp_path / "ws"
    _device_file(out, agent)
    r = invoke("benchmark", "--space", micro_space_file, "--out", out, "--device", "lab", *FAST)
    assert r.exit_code == 0, r.output
    table = out / "tables/micro/desktop/lab.json"
    p = json.loads(table.read_text())["provenance"]
    assert p["device"] == "lab" and p["host"]["agent"] == agent.url
    assert "'lab' at the agent" not in r.output and f"at the agent {agent.url}" in r.output

    r = invoke("search", "--space", micro_space_file, "--out", out, "-q", "--device", "lab", "--epochs", 2,
               "--warmup-epochs", 1)
    assert r.exit_code == 0, r.output
    r = invoke("validate", "--space", micro_space_file, "--out", out, "-q", "--device", "lab", "--samples", 4,
               "--no-fit", "--rounds", 1, "--no-recheck", "--json", *FAST)
    assert r.exit_code == 0, r.output
    v = json.loads(r.output)
    assert v["samples"] == 4 and v["predictor"] == "table sum" and v["median_abs_err_pct"] >= 0
    r = invoke("export", "--space", micro_space_file, "--out", out, "--device", "lab", "--json", *FAST)
    assert r.exit_code == 0, r.output
    e = json.loads(r.output)
    assert e["device"] == "lab" and e["measured"]["median_ms"] > 0 and e["predicted_ms"] > 0
    assert e["check"]["ok"] and e["table"].endswith("tables/micro/desktop/lab.json")


def test_client_errors_are_one_line(tmp_path, agent):
    token = tmp_path / "token.txt"
    token.write_text("not-the-token\n")
    port = _free_port()  # nothing listens there
    msg = _error(invoke("benchmark", "--space", "tiny", "--out", tmp_path, "--remote", f"http://127.0.0.1:{port}",
                        "--token-file", token))
    assert "does not answer" in msg and "pipeline agent" in msg
    msg = _error(invoke("benchmark", "--space", "tiny", "--out", tmp_path, "--remote", agent.url, "--token-file", token))
    assert "refused the token" in msg
    assert "--token-file" in _error(invoke("benchmark", "--out", tmp_path, "--remote", agent.url))
    assert "--remote" in _error(invoke("benchmark", "--out", tmp_path, "--token-file", token))
    assert "give the agent's URL" in _error(invoke("benchmark", "--out", tmp_path, "--remote", "127.0.0.1:1",
                                                   "--token-file", token))
    token.write_text("")
    assert "holds no token" in _error(invoke("benchmark", "--out", tmp_path, "--remote", agent.url, "--token-file", token))
    bad = tmp_path / "phone.yaml"
    bad.write_text("url: ftp://x\ntoken_file: t\n")
    assert "device file" in _error(invoke("benchmark", "--out", tmp_path, "--device", bad))
    # a target whose runner the agent's device lacks
    msg = _error(invoke("benchmark", "--target", "ios", "--out", tmp_path, "--remote", agent.url,
                        "--token-file", agent.token_file))
    assert "no device that runs 'coreml'" in msg


def test_search_for_a_target_this_machine_cannot_time_says_what_works_here(tmp_path):
    if sys.platform == "darwin":
        pytest.skip("Core ML runs here")
    msg = _error(invoke("search", "--target", "ios", "--out", tmp_path))
    assert "cannot be timed on this machine" in msg and "--remote URL" in msg and "pipeline benchmark import" in msg


def test_agent_cli_refuses_bad_settings(tmp_path):
    assert "both --tls-cert and --tls-key" in _error(invoke("agent", "--tls-cert", tmp_path / "c.pem",
                                                            "--store", tmp_path / "s"))
    assert "BACKEND.KEY=VALUE" in _error(invoke("agent", "--backend-option", "nonsense", "--store", tmp_path / "s"))


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_agent_over_tls_with_its_certificate_named_in_the_device_file(tmp_path, micro_space_file):
    cert, key = _certificate(tmp_path)
    with running_agent(tmp_path / "agent", "--tls-cert", str(cert), "--tls-key", str(key)) as tls:
        assert tls.url.startswith("https://127.0.0.1:")
        out = tmp_path / "ws"
        device = _device_file(out, tls, "secure")
        msg = _error(invoke("benchmark", "--space", micro_space_file, "--out", out, "--device", "secure", *FAST))
        assert "TLS certificate this machine does not trust" in msg and "ca: cert.pem" in msg
        device.write_text(yaml.safe_dump({"url": tls.url, "token_file": str(tls.token_file), "ca": str(cert)}))
        r = invoke("benchmark", "--space", micro_space_file, "--out", out, "--device", "secure", "-q", "--json", *FAST)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["agent"]["url"] == tls.url


def test_a_folder_artifact_packs_to_the_same_bytes_and_unpacks_only_inside(tmp_path):
    import io
    import tarfile

    from benchmarks.agent.wire import digest, pack, unpack

    folder = tmp_path / "model.mlpackage"
    (folder / "Data" / "weights").mkdir(parents=True)
    (folder / "Manifest.json").write_text('{"a": 1}')
    (folder / "Data" / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 4)
    first = pack(folder)
    os.utime(folder / "Manifest.json", (0, 12345))  # a new mtime: the same content packs alike
    assert pack(folder) == first and digest(first) == digest(pack(folder))
    blob = tmp_path / "blob"
    blob.write_bytes(first)
    unpack(blob, tmp_path / "out")
    assert (tmp_path / "out" / "Data" / "weights" / "weight.bin").read_bytes() == bytes(range(256)) * 4

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    blob.write_bytes(evil.getvalue())
    with pytest.raises(tarfile.TarError):
        unpack(blob, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()


def test_operation_estimates_need_a_device_whose_tooling_gives_them(tmp_path, agent, micro_space_file):
    out = tmp_path / "ws"
    assert invoke("benchmark", "--space", micro_space_file, "--out", out, "-q", *FAST).exit_code == 0
    assert invoke("search", "--space", micro_space_file, "--out", out, "-q", "--epochs", 2,
                  "--warmup-epochs", 1).exit_code == 0
    assert "add --remote URL" in _error(invoke("export", "--space", micro_space_file, "--out", out, "--operations"))
    msg = _error(invoke("export", "--space", micro_space_file, "--out", out, "--operations", "--remote", agent.url,
                        "--token-file", agent.token_file, *FAST))
    assert "the local backend has no per-operation estimates; only the iphone backend" in msg
