"""The measurement agent under hostile input: a real `pipeline agent` on 127.0.0.1 fed over a
thousand generated requests (schemathesis from its own OpenAPI schema, and hypothesis) and
hand-written ones: no token, a wrong token, oversized uploads, path-traversal names, malformed
JSON, wrong content types, unknown runners and devices, a file that is not a model, and requests
at once.

What must hold: nothing is accepted without the token, nothing answers 5xx, the agent answers
afterwards, and no name from a request ever becomes a path: its store holds only files named by
the hash of their bytes, and nothing appears outside it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import itertools
import json
import string
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from benchmarks.agent.wire import HASH, HASH_FIELD, Array, MeasureRequest, ProtocolSpec
from tests.agent_server import Agent, running_agent

MAX_UPLOAD = 2**20  # the agent below runs with --max-upload-mb 1
CANARY = "agent-security-canary"  # the file a traversal would create; looked for everywhere
TRAVERSAL = [f"../../{CANARY}", f"..%2f..%2f{CANARY}", f"%2e%2e%2f%2e%2e%2f{CANARY}", f"%252e%252e%252f{CANARY}",
             f"..\\..\\{CANARY}", f"/{CANARY}", f"%2F{CANARY}", f"....//{CANARY}", f"{CANARY}%00", "..", ".", "%2e%2e",
             f"blobs/../../{CANARY}", f"{'a' * 64}/../../{CANARY}", f"../tmp/{CANARY}", "../token.txt",
             f"..%2f..%2f..%2f..%2f..%2f..%2ftmp%2f{CANARY}"]
# A measurement short but bounded below: each one times 3 repeats of at least 40 ms (and finds
# its call count with one more), so timings that shared the device would end together.
SHORT = ProtocolSpec(warmup_runs=0, warmup_ms=0, repeats=3, min_repeat_ms=40, max_cv=10, retries=0, threads=1)
SETTINGS = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


class Sent:
    """Counts every request the tests send the agent (from any thread)."""

    def __init__(self) -> None:
        self.n, self.lock = 0, threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1


SENT = Sent()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def send(agent: Agent, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         token: str | None = "agent") -> tuple[int, Any]:
    """One request as written (no URL normalisation: `..` reaches the agent as sent); the status
    and the JSON answer (or its text). `token="agent"` sends the agent's token, None none."""
    url = urlsplit(agent.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    hdrs = {**auth(agent.token if token == "agent" else token), **(headers or {})}
    if isinstance(body, (dict, list)):
        body, hdrs = json.dumps(body), {"Content-Type": "application/json", **hdrs}
    SENT.add()
    try:
        conn.request(method, path, body=body, headers=hdrs)  # an iterator goes chunked
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
    finally:
        conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def put(agent: Agent, name: str, data: Any, content_type: str | None = "application/octet-stream",
        token: str | None = "agent") -> tuple[int, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return send(agent, "PUT", f"/v1/artifacts/{name}", data, headers, token)


def upload(agent: Agent, data: bytes) -> str:
    status, answer = put(agent, sha(data), data)
    assert status == 201 and answer == {"sha256": sha(data), "size": len(data)}, (status, answer)
    return sha(data)


def files_outside(folder: Path, store: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p != store and store not in p.parents}


def assert_alive_and_clean(agent: Agent, outside: set[Path]) -> None:
    """The agent answers, its store holds only what it named itself, and nothing else was written."""
    status, answer = send(agent, "GET", "/health", token=None)
    assert (status, answer) == (200, {"status": "ok"})
    status, answer = send(agent, "GET", "/v1/devices")
    assert status == 200 and answer["devices"], answer
    store = agent.store
    assert {p.name for p in store.iterdir()} <= {"blobs", "tmp", "unpacked"}
    for blob in (store / "blobs").iterdir():
        assert blob.is_file() and HASH.fullmatch(blob.name) and sha(blob.read_bytes()) == blob.name, blob
    for folder in (store / "unpacked").iterdir():
        digest, _, fmt = folder.name.partition(".")
        assert HASH.fullmatch(digest) and fmt.isalnum(), folder
    assert not list((store / "tmp").iterdir())  # refused and broken uploads leave nothing behind
    assert files_outside(agent.store.parent, store) == outside
    for where in [*agent.store.parents, Path.cwd()]:
        assert not (where / CANARY).exists(), where / CANARY


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[Agent]:
    with running_agent(tmp_path_factory.mktemp("agent"), "--max-upload-mb", "1") as a:
        yield a


@pytest.fixture(scope="module")
def outside(agent: Agent) -> set[Path]:
    """What the agent's folder holds beside its store before any test: its token file and log."""
    return files_outside(agent.store.parent, agent.store)


@pytest.fixture(scope="module")
def local(agent: Agent) -> dict[str, Any]:
    status, answer = send(agent, "GET", "/v1/devices")
    assert status == 200, answer
    device = next(d for d in answer["devices"] if d["backend"] == "local")
    assert "onnxruntime" in device["runners"], device
    return device


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[bytes, Any, np.ndarray]:
    """A tiny real ONNX model: (its bytes, the module, an input)."""
    import torch

    from export.onnx import OnnxExporter

    torch.manual_seed(0)
    module, x = torch.nn.Conv2d(1, 2, 3, padding=1).eval(), torch.randn(1, 1, 8, 8)
    artifact = OnnxExporter().export(module, (x,), tmp_path_factory.mktemp("model") / "conv.onnx")
    return artifact.path.read_bytes(), module, x.numpy()


def measure_body(device: str, artifact: str, x: np.ndarray, **kw: Any) -> dict[str, Any]:
    fields = {"runner": "onnxruntime", "format": "onnx", "protocol": SHORT, **kw}
    return json.loads(MeasureRequest(device=device, artifact=artifact, input=Array.of(x), **fields).model_dump_json())


# --- the token ---


def wrong_tokens(token: str) -> list[str]:
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [f"Bearer {token[:-1]}", f"Bearer {token}x", f"Bearer {flipped}", token, f"Token {token}",
            f"Basic {token}", "Bearer", "Bearer ", "", f"Bearer {token[:8]}", f"Bearer {token.upper()}"]


def test_every_route_but_health_refuses_a_missing_or_wrong_token(agent):
    routes = [("GET", "/v1/devices"), ("GET", f"/v1/artifacts/{'0' * 64}"), ("PUT", f"/v1/artifacts/{'0' * 64}"),
              ("POST", "/v1/measure"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
              ("GET", "/nowhere"), ("DELETE", "/v1/devices"), ("GET", "/health/"), ("GET", "/v1/../health")]
    for method, path in routes:
        for wrong in [None, *wrong_tokens(agent.token)]:
            status, answer = send(agent, method, path, b"x" if method in ("PUT", "POST") else None,
                                  {} if wrong is None else {"Authorization": wrong}, token=None)
            assert status == 401 and "token" in answer["detail"], (method, path, wrong, status, answer)
    assert send(agent, "GET", "/health", token=None) == (200, {"status": "ok"})


# --- uploads ---


def test_an_upload_in_another_content_type_is_refused_with_415(agent):
    data = b"bytes of some model"
    for kind in [None, "text/plain", "application/json", "multipart/form-data; boundary=x", "application/octet"]:
        status, answer = put(agent, sha(data), data, kind)
        assert status == 415 and "application/octet-stream" in answer["detail"], (kind, answer)
    assert send(agent, "GET", f"/v1/artifacts/{sha(data)}")[0] == 404


def test_an_upload_whose_bytes_do_not_hash_to_its_name_is_not_kept(agent):
    data, other = b"the bytes sent", b"the bytes named"
    status, answer = put(agent, sha(other), data)
    assert status == 422 and sha(data) in answer["detail"]
    assert put(agent, sha(b""), b"")[0] == 422  # empty
    for name in (sha(data), sha(other)):
        assert send(agent, "GET", f"/v1/artifacts/{name}")[0] == 404
    assert not (agent.store / "blobs" / sha(other)).exists()


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def started(agent: Agent, name: str, length: int, first: bytes = b"") -> http.client.HTTPConnection:
    """An upload of `length` bytes of which only the headers and `first` are sent."""
    url = urlsplit(agent.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("PUT", f"/v1/artifacts/{name}")
    for k, v in {**auth(agent.token), "Content-Type": "application/octet-stream", "Content-Length": str(length)}.items():
        conn.putheader(k, v)
    conn.endheaders(first or None)
    SENT.add()
    return conn


def test_an_oversized_upload_is_refused_with_or_without_its_length(agent):
    big = np.random.default_rng(0).bytes(MAX_UPLOAD + 1)
    conn = started(agent, sha(big), len(big))  # the answer comes before any of the body is sent
    r = conn.getresponse()
    assert r.status == 413 and str(MAX_UPLOAD + 1) in json.loads(r.read())["detail"]
    conn.close()
    status, answer = put(agent, sha(big), chunks(big))  # chunked: refused once it passes the limit
    assert status == 413 and str(MAX_UPLOAD) in answer["detail"]
    assert send(agent, "GET", f"/v1/artifacts/{sha(big)}")[0] == 404
    upload(agent, big[:MAX_UPLOAD])  # the limit itself is allowed
    assert put(agent, sha(b"y" * 1000), chunks(b"y" * 1000, 100))[0] == 201  # chunked, within it


def test_an_upload_cut_off_midway_leaves_nothing(agent, outside):
    conn = started(agent, "c" * 64, 5000, b"only part of it")
    time.sleep(0.3)
    conn.close()
    deadline = time.monotonic() + 10
    while list((agent.store / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_alive_and_clean(agent, outside)


def test_a_traversal_name_is_refused_and_writes_nothing(agent, outside):
    data = b"would-be payload"
    for name in TRAVERSAL:
        for method in ("PUT", "GET"):
            status, answer = send(agent, method, f"/v1/artifacts/{name}", data if method == "PUT" else None,
                                  {"Content-Type": "application/octet-stream"})
            assert status in (404, 405, 422), (method, name, status, answer)
    assert_alive_and_clean(agent, outside)


# --- measurements ---


def test_malformed_measure_requests_are_refused_with_422(agent, local):
    good = measure_body(local["id"], "0" * 64, np.zeros(4, np.float32))
    bodies = {  # the body, and what the refusal names
        '{"device": ': "JSON decode error", "[]": "body", "null": "body", '"text"': "body", "{}": "body.device",
        json.dumps({**good, "extra": 1}): "body.extra", json.dumps({**good, "device": "../vm"}): "body.device",
        # refused as a field (its pattern is anchored), not only later by the store
        json.dumps({**good, "artifact": f"../../{'0' * 64}"}): "body.artifact",
        json.dumps({**good, "reference": f"{'0' * 64}/.."}): "body.reference",
        json.dumps({**good, "input": {"shape": [10**30], "data": "AAAAAA=="}}): "larger than",
        json.dumps({**good, "input": {"shape": [2**32, 2**32], "data": "AAAAAA=="}}): "larger than",
        json.dumps({**good, "input": {"shape": [1], "data": "not base64!"}}): "malformed",
        json.dumps({**good, "protocol": {"repeats": 10**9}}): "body.protocol.repeats",
        json.dumps({**good, "reference": "0" * 64}): "together",
    }
    for body, named in bodies.items():
        status, answer = send(agent, "POST", "/v1/measure", body, {"Content-Type": "application/json"})
        assert status == 422 and named in answer["detail"] and "\n" not in answer["detail"], (body[:80], answer)
    status, answer = send(agent, "POST", "/v1/measure", json.dumps(good), {"Content-Type": "text/plain"})
    assert 400 <= status < 500, answer


def test_unknown_runners_devices_and_artifacts_are_named_in_the_refusal(agent, local):
    x = np.zeros(4, np.float32)
    status, answer = send(agent, "POST", "/v1/measure", measure_body(local["id"], "0" * 64, x, runner="nosuch"))
    assert status == 422 and "nosuch" in answer["detail"] and "onnxruntime" in answer["detail"]
    status, answer = send(agent, "POST", "/v1/measure", measure_body(local["id"], "0" * 64, x, format="tflite"))
    assert status == 422 and "tflite" in answer["detail"]
    status, answer = send(agent, "POST", "/v1/measure", measure_body("no-such-phone", "0" * 64, x))
    assert status == 404 and "no-such-phone" in answer["detail"] and local["id"] in answer["detail"]
    status, answer = send(agent, "POST", "/v1/measure", measure_body(local["id"], "0" * 64, x))
    assert status == 404 and "0" * 64 in answer["detail"]


@pytest.mark.slow
def test_a_stored_file_that_is_no_model_fails_in_one_line_and_a_model_measures(agent, local, model):
    junk = upload(agent, b"certainly not an ONNX model\n" * 10)
    status, answer = send(agent, "POST", "/v1/measure", measure_body(local["id"], junk, np.zeros(4, np.float32)))
    assert status == 200 and answer["status"] == "failed", answer
    assert answer["reason"] and "\n" not in answer["reason"] and "Traceback" not in answer["reason"]

    data, module, x = model
    status, answer = send(agent, "POST", "/v1/measure", measure_body(local["id"], upload(agent, data), x, outputs=True))
    assert status == 200 and answer["status"] == "ok", answer
    assert answer["stats"]["median_ms"] > 0 and answer["provenance"]["device"] == local["id"]
    import torch

    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Array.model_validate(answer["outputs"][0]).array(), expected, atol=1e-5)


@pytest.mark.slow
def test_requests_at_once_are_all_answered_and_timings_never_overlap(agent, local, outside, model):
    data, _, x = model
    artifact = upload(agent, data)
    # Pinned and unpinned timings run in two timing processes: only the agent's queue keeps them apart.
    bodies = [measure_body(local["id"], artifact, x, protocol=SHORT.model_copy(update={"pin": pin})) for pin in (True, False)]
    for body in bodies:
        assert send(agent, "POST", "/v1/measure", body)[1]["status"] == "ok"  # its timing process is up
    blobs = [np.random.default_rng(i).bytes(64 * 1024) for i in range(2)]

    def task(i: int) -> tuple[str, int, float, float]:
        start = time.monotonic()
        kind = ("measure", "upload", "list", "bad-upload")[i % 4]
        if kind == "measure":
            status, answer = send(agent, "POST", "/v1/measure", bodies[i // 4 % 2])
            assert answer["status"] == "ok", answer
        elif kind == "upload":  # the same bytes from two threads at once: both kept, once
            status, _ = put(agent, sha(blobs[i // 4 % 2]), blobs[i // 4 % 2])
        elif kind == "list":
            status = send(agent, "GET", "/v1/devices")[0] if i % 8 < 4 else send(agent, "GET", f"/v1/artifacts/{'1' * 64}")[0]
        else:
            status = put(agent, sha(b"named"), b"sent")[0]
        return kind, status, start, time.monotonic()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(task, range(32)))
    expected = {"measure": {200}, "upload": {201}, "list": {200, 404}, "bad-upload": {422}}
    assert all(status in expected[kind] for kind, status, _, _ in results), results
    # One at a time on the device: 8 timings of >= 120 ms each cannot end sooner than 8 x 120 ms
    # after the first began, and no two end within half of one.
    least_s = SHORT.repeats * SHORT.min_repeat_ms / 1e3
    timings = sorted((start, end) for kind, _, start, end in results if kind == "measure")
    ends = sorted(end for _, end in timings)
    assert ends[-1] - timings[0][0] >= len(timings) * least_s, timings
    assert min(b - a for a, b in itertools.pairwise(ends)) >= least_s / 2, ends
    assert_alive_and_clean(agent, outside)


# --- generated requests ---


def schemas(agent: Agent, device: dict[str, Any]) -> list[Any]:
    """The agent's published schema, and a copy aimed past the first checks (the real device, a
    runner with its format, artifacts named by a hash), so generated inputs reach the array,
    upload and store code rather than stopping at "no such device".

    The published schema leaves out the upload's body (the route reads the raw stream), so the
    copy describes it: bytes as application/octet-stream."""
    status, raw = send(agent, "GET", "/openapi.json")
    assert status == 200, raw
    aimed = copy.deepcopy(raw)
    fields = aimed["components"]["schemas"]["MeasureRequest"]["properties"]
    fields.update(device={"enum": [device["id"]]}, runner={"enum": ["onnxruntime"]}, format={"enum": ["onnx"]})
    artifact = aimed["paths"]["/v1/artifacts/{sha256}"]
    for method in ("get", "put"):
        artifact[method]["parameters"][0]["schema"] = {"type": "string", "pattern": HASH_FIELD}
    artifact["put"]["requestBody"] = {
        "required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    return [schemathesis.openapi.from_dict(raw), schemathesis.openapi.from_dict(aimed)]


HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=60)


def check_case(agent: Agent, session: requests.Session, case: Any, wrong: str) -> None:
    """A generated case: with the token, any answer but a 5xx; without it or with a wrong one, 401."""
    SENT.add()
    response = case.call(base_url=agent.url, session=session, headers=auth(agent.token), timeout=60)
    assert response.status_code < 500, (case, response.status_code, response.text[:300])
    for headers in ({}, {"Authorization": wrong}):
        SENT.add()
        response = case.call(base_url=agent.url, session=session, headers=headers, timeout=60)
        expected = 200 if case.path == "/health" else 401
        assert response.status_code == expected, (case, headers, response.status_code, response.text[:300])


def run_schema(agent: Agent, schema: Any, examples: int) -> None:
    wrong = st.one_of(st.sampled_from(wrong_tokens(agent.token)), HEADER_TEXT.map(lambda s: f"Bearer {s}"))
    wrong = wrong.filter(lambda w: w.strip() != f"Bearer {agent.token}")
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:
                strategy = operation.as_strategy(generation_mode=mode)

                @settings(SETTINGS, max_examples=examples)
                @given(case=strategy, token=wrong)
                def run(case: Any, token: str) -> None:
                    check_case(agent, session, case, token)

                try:
                    run()
                except Unsatisfiable:  # an operation with nothing to break (no parameters, no body)
                    if mode != GenerationMode.NEGATIVE:
                        raise


def artifact_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(TRAVERSAL), st.text(max_size=80), st.binary(max_size=8).map(sha),
                     st.from_regex(HASH, fullmatch=True))


def run_uploads(agent: Agent, examples: int) -> None:
    """PUTs hypothesis makes: names (traversals, any text, hashes), content types and bodies."""
    kinds = st.sampled_from([None, "application/octet-stream", "Application/Octet-Stream; x=1", "text/plain",
                             "application/json", "multipart/form-data; boundary=b", "application/octet-stream2"])
    body = st.binary(max_size=2048)

    @settings(SETTINGS, max_examples=examples)
    @given(name=artifact_names(), kind=kinds, data=body, right=st.booleans())
    def run(name: str, kind: str | None, data: bytes, right: bool) -> None:
        name = sha(data) if right else name
        path = quote(name, safe="/.%")
        status, answer = put(agent, path, data, kind)
        assert status < 500, (name, kind, status, answer)
        if 200 <= status < 300:
            assert name == sha(data) and data and kind.split(";")[0].lower() == "application/octet-stream", name
        for token in (None, "wrong"):
            assert put(agent, path, data, kind, token)[0] == 401, (name, token)

    run()


def arrays(wild: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Arrays on the wire: shapes of sizes near the edges of int32 and int64 (a dimension of 2**63
    or 10**30 overflowed np.prod: a 500), with base64 data; `wild`, any ints and any text too."""
    edges = st.sampled_from([2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, 10**30])
    dims, data = st.one_of(st.integers(0, 64), edges), st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
    if wild:
        dims, data = st.one_of(dims, st.integers()), st.one_of(data, st.text(max_size=20))
    return st.fixed_dictionaries({"shape": st.lists(dims, max_size=9 if wild else 4), "data": data})


def measure_bodies(device: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Measure requests: half valid up to their arrays (the real device, a runner with its
    format), so those reach the array and store code; half with anything in any field. No
    artifact named is stored, so none gets timed."""
    scalars = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=10), st.none())
    names = st.one_of(st.from_regex(HASH, fullmatch=True), st.sampled_from(TRAVERSAL))
    pairs = [p for p in [("onnxruntime", "onnx"), ("litert", "tflite"), ("executorch", "pte")] if p[0] in device["runners"]]
    valid = st.fixed_dictionaries({
        "device": st.just(device["id"]), "runner_format": st.sampled_from(pairs),
        "artifact": st.from_regex(HASH, fullmatch=True), "input": arrays(wild=False),
    }, optional={"outputs": st.booleans()})
    anything = st.fixed_dictionaries({
        "device": st.sampled_from([device["id"], "no-such-phone", f"../{device['id']}", ""]),
        "runner_format": st.sampled_from([*pairs, ("nosuch", "onnx"), ("onnxruntime", "mlpackage"), ("onnxruntime", "../x")]),
        "artifact": names, "input": arrays(wild=True),
    }, optional={"outputs": scalars, "runner_options": st.dictionaries(st.text(max_size=10), scalars, max_size=3),
                 "protocol": st.dictionaries(st.sampled_from([*ProtocolSpec.model_fields, "x"]), scalars, max_size=4)})
    ref_input = arrays(wild=True)
    reference = st.one_of(st.just({}), st.fixed_dictionaries({"reference": names, "reference_input": ref_input}),
                          st.fixed_dictionaries({}, optional={"reference": names, "reference_input": ref_input}))

    def body(fields: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
        runner, fmt = fields.pop("runner_format")
        return {**fields, "runner": runner, "format": fmt, **ref}

    return st.builds(body, st.one_of(valid, anything), reference)


def run_measures(agent: Agent, device: dict[str, Any], examples: int) -> None:
    @settings(SETTINGS, max_examples=examples)
    @given(body=measure_bodies(device))
    def run(body: dict[str, Any]) -> None:
        status, answer = send(agent, "POST", "/v1/measure", body)
        assert 400 <= status < 500, (body, status, answer)  # nothing here is stored: never a timing
        for token in (None, "wrong"):
            assert send(agent, "POST", "/v1/measure", body, token=token)[0] == 401, (body, token)

    run()


@pytest.mark.slow
def test_a_thousand_generated_requests_none_accepted_without_the_token_none_5xx(agent, local, outside):
    before = SENT.n
    for schema in schemas(agent, local):
        run_schema(agent, schema, examples=40)
    run_uploads(agent, examples=80)
    run_measures(agent, local, examples=100)
    sent = SENT.n - before
    assert sent >= 1000, sent
    assert_alive_and_clean(agent, outside)
