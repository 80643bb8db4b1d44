"""Validating a device this machine is not: the bundle, the device script, and the times brought back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.bundle import MANIFEST
from benchmarks.predict import LatencyModel
from benchmarks.table import load_table
from benchmarks.runners.executorch import parse_executor_runner
from benchmarks.runners.litert import parse_benchmark_model
from pipeline.cli import main
from tests.conftest import make_table

FAST = ["--repeats", "3", "--min-repeat-ms", "0.5"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write_bundle(space, space_file: Path, out: Path, target: str, device: str, *args) -> str:
    """A hand-made table for (target, device), then `validate --device` on it: the bundle's output."""
    make_table(space, target=target, device=device).save(out / f"tables/micro/{target}/{device}.json")
    r = invoke("validate", "--space", space_file, "--out", out, "--target", target, "--device", device, *args)
    assert r.exit_code == 0, r.output
    return r.output


def test_a_device_bundle_is_timed_elsewhere_and_its_times_fit_the_device_table(micro_space, micro_space_file: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "ws"
    assert invoke("benchmark", "--space", micro_space_file, "--out", out, "-q", *FAST).exit_code == 0
    r = invoke("benchmark", "import", out / "tables/micro/desktop/host.json", "--target", "desktop",
               "--device", "laptop", "--space", micro_space_file, "--out", out)
    assert r.exit_code == 0, r.output
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop", "--samples", 16, "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.output)
    folder = Path(made["bundle"])
    assert made["networks"] == 16 and folder == out / "validate/micro/desktop/laptop/bundle-fit-seed0"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert (manifest["target"], manifest["device"], manifest["fit"]) == ("desktop", "laptop", True)
    nets = manifest["networks"]
    assert [n["name"] for n in nets] == [f"net-{i:02d}" for i in range(16)]
    assert [n["fits"] for n in nets] == [True, False] * 8  # every other network fits, as validate here does
    assert not (folder / "time_on_device.sh").exists()  # no adb tool for ONNX Runtime: the CSV it is
    assert (folder / "measurements.csv").read_text().splitlines() == ["network,ms"] + [f"net-{i:02d}," for i in range(16)]
    # written again, the same networks: the times filled in so far are kept
    # A device that runs each network at 0.02 ms + 0.7 x its table sum, two rounds 2% apart: a fit of
    # it is credible (timed here, at whatever speed this machine has now, a fit may rightly be refused).
    plain = LatencyModel.from_table(load_table(out / "tables/micro/desktop/laptop.json"), micro_space, calibrated=False)
    rows = ["network,ms", "# a device's times, two rounds"]
    rows += [f"{n['name']},{(0.02 + 0.7 * plain.predict(micro_space, tuple(n['blocks']))) * (1 + 0.01 * (-1) ** r):.5f}"
             for r in range(2) for n in nets if n["name"] != "net-15"]
    (folder / "measurements.csv").write_text("\n".join(rows) + "\n")
    assert invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop", "--samples", 16,
                  "-q").exit_code == 0
    assert (folder / "measurements.csv").read_text().startswith("network,ms\n# a device")

    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop",
               "--measurements", folder / "measurements.csv", "--json")
    assert r.exit_code == 0, r.output
    head = json.loads(r.output)
    # net-15 (a judging network) was not timed: 7 networks judge the fit made on the other 8
    assert (head["samples"], head["predictor"], head["fitted_now"]) == (7, "calibrated", True)
    assert head["noise"]["rounds"] == 2 and head["drift"] is None
    (cal,) = json.loads((out / "tables/micro/desktop/laptop.json").read_text())["calibration"].values()
    assert cal["fitted_on"] == 8 and cal["fitted_keys"] == [",".join(n["blocks"]) for n in nets[0:16:2]]
    assert "calibration" not in json.loads((out / "tables/micro/desktop/host.json").read_text())
    saved = json.loads((out / "validate/micro/desktop/laptop/validate.json").read_text())
    assert (saved["measured_on"], saved["missing"], saved["protocol"]) == ("laptop", ["net-15"], None)
    assert [Path(s["artifact"]).name for s in saved["samples"]] == [f"net-{i:02d}.onnx" for i in range(15)]
    for s in saved["samples"]:
        assert len(s["rounds_ms"]) == 2 and s["measured_ms"] == pytest.approx(np.median(s["rounds_ms"]))

    # the text report names the device and what was left out; search predicts the device with the fit
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop",
               "--measurements", folder / "measurements.csv", "--no-fit")
    assert "15 networks timed on laptop (brought in from" in r.output and "not measured, left out: net-15" in r.output
    assert "(stored in the table" in r.output and "errors of that size are laptop's" in r.output
    r = invoke("search", "--space", micro_space_file, "--out", out, "--device", "laptop", "--epochs", 1,
               "--warmup-epochs", 0, "-q")
    assert "on desktop/laptop (calibrated table sum (fitted on 8 whole networks))" in r.output  # -q: one line

    # the next bundle is drawn to judge that fit: other networks, in a folder of its own
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop", "--samples", 4, "-q")
    assert "bundle-judge-seed0" in r.output and "all judge the table's prediction" in r.output
    judge = json.loads((out / "validate/micro/desktop/laptop/bundle-judge-seed0" / MANIFEST).read_text())
    assert not {",".join(n["blocks"]) for n in judge["networks"]} & set(cal["fitted_keys"])


def test_device_measurements_bad_input(micro_space, micro_space_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ws"
    folder = Path(json.loads(write_bundle(micro_space, micro_space_file, out, "desktop", "laptop", "--samples", 16,
                                          "--json"))["bundle"])
    csv = folder / "measurements.csv"

    def judged(text: str | bytes | None, *extra):
        if isinstance(text, bytes):
            csv.write_bytes(text)
        elif text is not None:
            csv.write_text(text)
        return invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop",
                      "--measurements", csv, *extra)

    cases = [
        (None, "holds no measurements yet; time the networks first"),  # the untouched template
        ("net,time\nnet-00,1.0\n", "the first line must be the header 'network,ms'"),
        ("network,ms\nnet-00,1.0\nnet-99,2.0\n", "measurements.csv:3: network 'net-99' is not in the bundle"),
        ("network,ms\nnet-00,fast\n", "measurements.csv:2: 'fast' is not a number of milliseconds"),
        ("network,ms\nnet-00,-1\n", "measurements.csv:2: ms = -1.0: expected milliseconds per inference above 0"),
        ("\ufeffnetwork,ms\n# a comment\nnet-00,12,5\n", "measurements.csv:3: a row is 'network,ms' (two fields"),
        ("network,ms\n\n#\nnet-00,inf\n", "measurements.csv:4: ms = inf: expected milliseconds per inference"),
        (b"network,ms\nnet-00,\xff\n", "is not a readable CSV"),
        ("network,ms\n" + "".join(f"net-{i:02d},1.0\n" for i in range(16) if i not in (4, 6)),  # two fitting ones missing
         "2 network(s) the calibration fits on have no time yet (net-04, net-06); time them"),
    ]
    for text, message in cases:
        r = judged(text)
        assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr, (text, r.stderr)
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--measurements", csv)
    assert r.exit_code == 2 and "--measurements brings in times measured on another device" in r.stderr
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "phone", "--measurements", csv)
    assert r.exit_code == 2 and "was written for device 'laptop', not 'phone'" in r.stderr
    r = judged(None, "--measurements", folder / "logs")
    assert r.exit_code == 2 and f"logs' do not exist; run {folder}/time_on_device.sh with the device attached" in r.stderr
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop", "--measurements",
               tmp_path / "times.csv")
    assert r.exit_code == 2 and "no manifest.json beside" in r.stderr
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "phone", "--samples", 8)
    assert r.exit_code == 2 and "validate needs a complete table: no latency table for space 'micro' on desktop/phone" in r.stderr
    (folder / "logs").mkdir()
    r = judged("network,ms\n", "--measurements", folder / "logs")  # a folder: only device tools write logs
    assert r.exit_code == 2 and "has no device tool whose logs this tool reads" in r.stderr
    r = judged(None, "--measurements", folder)
    assert r.exit_code == 2 and "is the bundle itself; pass its logs/ folder or its measurements.csv" in r.stderr
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": 2}))
    r = judged(None)
    assert r.exit_code == 2 and "is version 2, this tool reads version 1" in r.stderr
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--device", "laptop", "--samples", 16)
    assert r.exit_code == 2 and f"(to write a new bundle, move '{folder}' away first)" in r.stderr


BENCHMARK_MODEL_LOG = """\
INFO: Loaded model /data/local/tmp/net-00.tflite
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628

INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
"""


def test_device_tool_logs_are_read_as_their_tools_print_them() -> None:
    assert parse_benchmark_model(BENCHMARK_MODEL_LOG) == pytest.approx(51.891)  # the timed runs' median
    old = "count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929\n" \
          "Inference timings in us: Init: 38467, First inference: 83235, Warmup (avg): 83235, Inference (avg): 79760.9\n"
    assert parse_benchmark_model(old) == pytest.approx(79.7609)  # no median printed: the average
    with pytest.raises(ValueError, match="did not finish"):
        parse_benchmark_model(BENCHMARK_MODEL_LOG.rsplit("INFO: Inference", 1)[0])
    assert parse_executor_runner("I 00:00:01 executor_runner.cpp:190] Model executed successfully 50 time(s) in "
                                 "612.500000 ms.\n") == pytest.approx(12.25)
    with pytest.raises(ValueError, match="build executor_runner with -DEXECUTORCH_ENABLE_LOGGING=ON"):
        parse_executor_runner("Model executed successfully 1 time(s).\n")


FAKE_ADB = """\
#!{python}
# adb with an Android device simulated in a folder: 'shell' runs the device's commands there, and
# the benchmark_model on it times the .tflite with LiteRT's interpreter and prints as the real one.
import os, shlex, shutil, sys, time
root = os.environ["FAKE_DEVICE"]
here = lambda p: os.path.join(root, p.lstrip("/"))
with open(os.path.join(root, "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "push":
    os.makedirs(os.path.dirname(here(sys.argv[3])), exist_ok=True)
    shutil.copyfile(sys.argv[2], here(sys.argv[3]))
    sys.exit(0)
words = shlex.split(" ".join(sys.argv[2:]))  # as adb does: its arguments joined, for the device shell
if words[0] == "test":
    sys.exit(0 if os.access(here(words[2]), os.X_OK) else 1)
if words[0] == "mkdir":
    os.makedirs(here(words[2]), exist_ok=True)
    sys.exit(0)
if words[0] == "rm":
    shutil.rmtree(here(words[2]))
    sys.exit(0)
flags = dict(w[2:].split("=", 1) for w in words[1:])
model = flags.get("graph") or flags["model_path"]
if os.path.basename(model) == os.environ.get("FAIL_ON", ""):
    print("ERROR: the tool crashed"); sys.exit(3)
import numpy as np
if "graph" in flags:  # benchmark_model, timing with LiteRT
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=here(model), num_threads=int(flags["num_threads"]))
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], np.float32))
    it.invoke()
    us = []
    for _ in range(20):
        t = time.perf_counter(); it.invoke(); us.append((time.perf_counter() - t) * 1e6)
    print(f"INFO: count=20 first={{us[0]:.0f}} curr={{us[-1]:.0f}} min={{min(us):.0f}} max={{max(us):.0f}} "
          f"avg={{np.mean(us):.1f}} std=1 p5=1 median={{np.median(us):.1f}} p95=1")
    print(f"INFO: Inference timings in us: Init: 1, First inference: 1, Warmup (avg): 1, Inference (avg): {{np.mean(us):.1f}}")
else:  # executor_runner, timing with the ExecuTorch runtime
    import torch
    from executorch.runtime import Runtime
    method = Runtime.get().load_program(here(model)).load_method("forward")
    x = torch.ones(*method.metadata.input_tensor_meta(0).sizes())
    n = int(flags["num_executions"])
    t = time.perf_counter()
    for _ in range(n):
        method.execute([x])
    print(f"I 00:00:00.100 executorch:executor_runner.cpp:320] Model executed successfully {{n}} time(s) in "
          f"{{(time.perf_counter() - t) * 1e3:.6f}} ms.")
"""


def time_on_fake_phone(folder: Path, tmp_path: Path, tool: str, **env: str) -> Path:
    """Run the bundle's script against the adb stand-in, `tool` installed on the phone, with `env`
    (the script's own settings); the phone's folder."""
    device = tmp_path / "device"
    (device / "data/local/tmp").mkdir(parents=True)
    (device / "data/local/tmp" / tool).write_text("")
    (device / "data/local/tmp" / tool).chmod(0o755)
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    done = subprocess.run(["sh", folder / "time_on_device.sh"], capture_output=True, text=True,
                          env={**os.environ, "ADB": str(adb), "FAKE_DEVICE": str(device), "COOLDOWN": "0", **env})
    assert done.returncode == 0, done.stderr
    return device


@pytest.mark.slow
def test_the_android_script_times_every_network_resumes_and_its_logs_fit_the_table(micro_space, micro_space_file: Path,
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "ws"
    said = write_bundle(micro_space, micro_space_file, out, "android", "pixel1", "--samples", 4, "--rounds", 2,
                        "--no-fit")  # a fit needs 16 networks; the script is what this is about
    folder = out / "validate/micro/android/pixel1/bundle-judge-seed0"
    assert f"sh {folder}/time_on_device.sh" in said
    then = f"pipeline validate --target android --device pixel1 --space {micro_space_file} --out {out} " \
           f"--measurements {folder}/logs"
    assert then in said and then in (folder / "time_on_device.sh").read_text() and then in (folder / "README.txt").read_text()
    device = tmp_path / "device"
    tool = device / "data/local/tmp/benchmark_model"
    tool.parent.mkdir(parents=True)
    tool.write_text("")
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    env = {**os.environ, "ADB": str(adb), "FAKE_DEVICE": str(device), "COOLDOWN": "0"}
    script = folder / "time_on_device.sh"

    def run(**extra):
        (device / "calls.txt").unlink(missing_ok=True)
        return subprocess.run(["sh", script], env={**env, **extra}, capture_output=True, text=True)

    done = run(FAIL_ON="")
    assert done.returncode == 1 and "no executable tool at /data/local/tmp/benchmark_model" in done.stderr
    tool.chmod(0o755)
    done = run(FAIL_ON="net-03.tflite")
    assert done.returncode == 1 and "net-03, round 0: the tool failed" in done.stderr
    assert "2 run(s) failed" in done.stderr and (folder / "logs/net-03.r1.log.tmp").is_file()
    logs = sorted(p.name for p in (folder / "logs").glob("*.log"))
    assert logs == sorted(f"net-{i:02d}.r{r}.log" for i in range(4) for r in range(2) if i != 3)
    timed = [line.split("--graph=")[1].split()[0] for line in (device / "calls.txt").read_text().splitlines()
             if "--graph=" in line]
    names = [Path(t).stem for t in timed]
    assert names == [f"net-{i:02d}" for i in range(4)] + [f"net-{i:02d}" for i in reversed(range(4))]  # alternating
    assert all("--num_threads=1 " in line for line in (device / "calls.txt").read_text().splitlines()
               if "--graph=" in line)
    done = run(FAIL_ON="")  # run again: only the two failed runs are timed
    assert done.returncode == 0, done.stderr
    again = [line for line in (device / "calls.txt").read_text().splitlines() if "--graph=" in line]
    assert len(again) == 2 and all("net-03.tflite" in line for line in again)
    assert not list((folder / "logs").glob("*.tmp")) and not (device / "data/local/tmp/pipeline-validate-pixel1").exists()

    r = invoke("validate", "--space", micro_space_file, "--out", out, "--target", "android", "--device", "pixel1",
               "--measurements", folder / "logs", "--json")
    assert r.exit_code == 0, r.output
    head = json.loads(r.output)
    assert (head["samples"], head["fitted_now"], head["noise"]["rounds"]) == (4, False, 2)
    saved = json.loads((out / "validate/micro/android/pixel1/validate.json").read_text())
    first = float((folder / "logs/net-00.r0.log").read_text().split("median=")[1].split()[0]) / 1000
    assert saved["samples"][0]["rounds_ms"][0] == pytest.approx(first)
    (folder / "logs/net-05.r1.log").write_text("INFO: Loaded model\n")  # a run cut short
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--target", "android", "--device", "pixel1",
               "--measurements", folder / "logs")
    assert r.exit_code == 2 and "net-05.r1.log: it has no 'Inference timings in us' line" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_iphone_bundle_holds_core_ml_packages_and_says_how_to_time_them(micro_space, micro_space_file: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "ws"
    said = write_bundle(micro_space, micro_space_file, out, "ios", "iphone15", "--samples", 4)
    folder = out / "validate/micro/ios/iphone15/bundle-judge-seed0"  # 4 networks are too few to fit: they judge
    assert f"--measurements {folder}/measurements.csv" in said
    packages = sorted(folder.glob("networks/*.mlpackage"))
    assert [p.name for p in packages] == [f"net-{i:02d}.mlpackage" for i in range(4)]
    assert all((p / "Manifest.json").is_file() for p in packages) and not (folder / "time_on_device.sh").exists()
    readme = (folder / "README.txt").read_text()
    assert "open each .mlpackage in Xcode, choose the Performance tab" in readme and "thread" not in readme


@pytest.mark.slow
def test_a_phone_s_table_is_timed_there_from_a_bundle_of_its_blocks(micro_space, micro_space_file: Path,
                                                                    tmp_path: Path) -> None:
    """`benchmark --device pixel7` writes every row's block to time on the phone; the script's logs
    (here from the adb stand-in, which runs LiteRT) become the pixel7 table, which search uses."""
    out = tmp_path / "ws"
    r = invoke("benchmark", "--space", micro_space_file, "--out", out, "--target", "android", "--device", "pixel7", "-q")
    assert r.exit_code == 0, r.output
    folder = out / "benchmark/micro/android/pixel7/bundle"
    then = f"pipeline benchmark import --target android --device pixel7 --space {micro_space_file} --out {out} {folder}/logs"
    assert "19 blocks of 'micro' for android" in r.output and then in r.output  # 15 rows and 4 no-op rows
    assert not (out / "tables/micro/android/pixel7.json").exists()  # nothing was timed here
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kind"] == "benchmark" and len({n["row"] for n in manifest["networks"]}) == 19
    assert "ROUNDS=${ROUNDS:-3}" in (folder / "time_on_device.sh").read_text()  # 3 rounds by default
    time_on_fake_phone(folder, tmp_path, "benchmark_model", ROUNDS="2")  # each round runs the tool on 19 blocks
    assert len(list((folder / "logs").glob("block-*.r*.log"))) == 19 * 2
    r = invoke("benchmark", "import", folder / "logs", "--target", "android", "--device", "pixel7", "--space",
               micro_space_file, "--out", out)
    assert r.exit_code == 0, r.output
    table = json.loads((out / "tables/micro/android/pixel7.json").read_text())
    assert table["provenance"]["device"] == "pixel7" and "benchmark_model" in table["provenance"]["source"]
    rows = {row["key"]: row for row in table["rows"]}
    for n in manifest["networks"]:
        times = [parse_benchmark_model((folder / f"logs/{n['name']}.r{k}.log").read_text()) for k in range(2)]
        row = rows[n["row"]]
        assert row["median_ms"] == pytest.approx(np.median(times)) and row["count"] == 2
        assert sorted(row["samples_ms"]) == pytest.approx(sorted(times), abs=1e-6)
    assert table["provenance"]["format"] == "tflite" and "versions" in table["provenance"]["exporter_options"]
    r = invoke("search", "--space", micro_space_file, "--out", out, "--target", "android", "--device", "pixel7",
               "--epochs", 1, "--warmup-epochs", 0, "-q")
    assert r.exit_code == 0 and "on android/pixel7" in r.output
    # export checks the derived network here, but does not judge the phone's prediction by this machine's time
    r = invoke("export", "--space", micro_space_file, "--out", out, "--target", "android", "--device", "pixel7")
    assert r.exit_code == 0 and "check against PyTorch" in r.output and "measured end to end" not in r.output
    assert "not timed here: the prediction is for pixel7; 'pipeline validate --target android --device pixel7" in r.output
    # the same bundle for other threads would inherit these logs: refused, so is the bundle folder itself
    r = invoke("benchmark", "--space", micro_space_file, "--out", out, "--target", "android", "--device", "pixel7",
               "--threads", 2, "-q")
    assert r.exit_code == 2 and "holds a bundle of other blocks, space, exporter options or threads" in r.stderr
    r = invoke("benchmark", "import", folder, "--target", "android", "--device", "pixel7", "--space",
               micro_space_file, "--out", out, "--force")
    assert r.exit_code == 2 and "is the bundle itself; pass its logs/ folder or its measurements.csv" in r.stderr
    # a bundle's times for the wrong device, or a validate bundle, are refused in one line
    r = invoke("benchmark", "import", folder / "logs", "--target", "android", "--device", "pixel8", "--space",
               micro_space_file, "--out", out)
    assert r.exit_code == 2 and "was written for device 'pixel7', not 'pixel8'" in r.stderr
    (folder / "logs/block-004.r1.log").unlink()
    (folder / "logs/block-004.r0.log").unlink()
    r = invoke("benchmark", "import", folder / "logs", "--target", "android", "--device", "pixel7", "--space",
               micro_space_file, "--out", out, "--force")
    assert r.exit_code == 2 and "1 of the 19 blocks have no time yet (block-004 (" in r.stderr


@pytest.mark.slow
def test_the_executorch_script_times_with_executor_runner_flags_and_its_logs_fit(micro_space, micro_space_file: Path,
                                                                               tmp_path: Path) -> None:
    out = tmp_path / "ws"
    # 3 networks: each is an ExecuTorch export of its own, and the script is what this is about
    write_bundle(micro_space, micro_space_file, out, "android-executorch", "pixel1", "--samples", 3, "--rounds", 1,
                 "--no-fit")
    folder = out / "validate/micro/android-executorch/pixel1/bundle-judge-seed0"
    device = time_on_fake_phone(folder, tmp_path, "executor_runner")
    runs = [line for line in (device / "calls.txt").read_text().splitlines() if "--model_path=" in line]
    assert len(runs) == 3 and all("--num_executions=50 --cpu_threads=1" in line and ".pte" in line for line in runs)
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--target", "android-executorch", "--device",
               "pixel1", "--measurements", folder / "logs", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["samples"] == 3
    saved = json.loads((out / "validate/micro/android-executorch/pixel1/validate.json").read_text())
    log = (folder / "logs/net-00.r0.log").read_text()
    assert saved["samples"][0]["rounds_ms"] == [pytest.approx(parse_executor_runner(log))]
