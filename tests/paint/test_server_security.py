"""The painting server as a web page in the user's browser could reach it (DNS rebinding, simple cross-origin
POSTs) and as a malformed request or results file would: every refusal is a JSON 4xx without a traceback or a
local path, a stroke that fails leaves the image as it was, and the palette is checked at start-up."""

from __future__ import annotations

import socket

import pytest
import torch
from starlette.testclient import TestClient

from lightning_gd.paint.server import create_app, host_allowed
from lightning_gd.paint.session import Brush, PaintSession

BRUSH = "building (IoU)"
PORT = 8765


@pytest.fixture(scope="module")
def client(session):
    return TestClient(create_app(session, "127.0.0.1", PORT), base_url=f"http://127.0.0.1:{PORT}")


def square(session) -> list[list[int]]:
    h, w = session.size
    return [[int(y < 2 and x < 2) for x in range(w)] for y in range(h)]


def clean_json_error(res, status: int) -> str:
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith("application/json")
    text = res.json()["error"]
    assert "Traceback" not in res.text and "/work" not in res.text and "/tmp" not in res.text, res.text
    return text


@pytest.mark.parametrize(
    "host, ok",
    [
        (f"127.0.0.1:{PORT}", True), (f"localhost:{PORT}", True), (f"[::1]:{PORT}", True),
        (f"192.168.1.7:{PORT}", True),  # an address, not a name: no page can rebind it
        (f"attacker.example:{PORT}", False), (f"localhost.attacker.example:{PORT}", False),
        ("127.0.0.1:9999", False), ("", False), (f"127.0.0.1:{PORT}x", False),
    ],
)  # fmt: skip
def test_the_host_must_name_this_server(host, ok):
    assert host_allowed(host, "127.0.0.1", PORT) is ok


def test_a_rebound_host_is_refused(client):
    res = client.get("/api/concepts", headers={"host": f"attacker.example:{PORT}"})
    assert "answers only requests addressed to it" in clean_json_error(res, 421)
    assert client.get("/", headers={"host": f"attacker.example:{PORT}"}).status_code == 421
    assert client.get("/api/concepts", headers={"host": f"localhost:{PORT}"}).status_code == 200


def test_cross_origin_and_simple_posts_are_refused(client):
    simple = client.post("/api/sample", content=b'{"seed": 1}', headers={"content-type": "text/plain"})
    assert "application/json" in clean_json_error(simple, 415)
    foreign = client.post("/api/sample", json={"seed": 1}, headers={"origin": "http://attacker.example"})
    assert "cross-origin" in clean_json_error(foreign, 403)
    same = client.post("/api/sample", json={"seed": 1}, headers={"origin": f"http://127.0.0.1:{PORT}"})
    assert same.status_code == 200 and same.json()["seed"] == 1


def test_malformed_bodies_are_json_4xx(client, session):
    key = client.post("/api/sample", json={"seed": 2}).json()["id"]
    edit = {"id": key, "action": "draw", "mask": square(session), "n": 5}
    res = client.post("/api/edit", json={**edit, "concept": {"name": BRUSH}})
    assert "unknown concept of type dict" in clean_json_error(res, 400)
    for concept in ([BRUSH], None, 3):
        assert client.post("/api/edit", json={**edit, "concept": concept}).status_code == 400
    deep = b'{"seed": ' + b"[" * 30000 + b"]" * 30000 + b"}"  # under the size limit, deeper than the parser
    res = client.post("/api/sample", content=deep, headers={"content-type": "application/json"})
    assert "nested too deeply" in clean_json_error(res, 400)


def test_a_failed_stroke_leaves_the_image_unchanged(client, session, monkeypatch):
    key = client.post("/api/sample", json={"seed": 3}).json()["id"]
    drawn = client.post("/api/edit", json={"id": key, "action": "draw", "concept": BRUSH,
                                           "mask": square(session), "n": 5}).json()  # fmt: skip

    def broken(*args, **kwargs):
        raise RuntimeError(f"a bug that mentions {session.layer} and /work/secret")

    monkeypatch.setattr(session.split, "f", broken)
    res = client.post("/api/edit", json={"id": key, "action": "remove", "concept": BRUSH, "mask": square(session),
                                         "n": 5})  # fmt: skip
    assert "internal error" in clean_json_error(res, 500)
    monkeypatch.undo()
    assert len(session.images[key].strokes) == 1
    again = client.post("/api/undo", json={"id": key}).json()
    assert again["edits"] == 0 and drawn["edits"] == 1


def test_a_brush_with_a_nan_k_c_is_refused_not_drawn(client, session):
    key = client.post("/api/sample", json={"seed": 4}).json()["id"]
    brush = session.brushes[BRUSH]
    kept = session.k_c(brush).clone()
    brush.k_c = torch.full_like(kept, float("nan"))
    try:
        res = client.post("/api/edit", json={"id": key, "action": "draw", "concept": BRUSH, "mask": square(session),
                                             "n": 5})  # fmt: skip
        assert "no usable k_c" in clean_json_error(res, 409)
        assert session.images[key].strokes == []
    finally:
        brush.k_c = kept


def test_the_palette_is_checked_at_start_up_and_shows_no_absolute_path(session):
    good = session.brushes[BRUSH]
    brushes = [
        Brush("good", good.concept, "iou", good.units, None, "/home/someone/private/out/dissect"),
        Brush("far (α)", "tree", "alpha", [3, 999], torch.zeros(session.units), "out/causal/far"),
        Brush("nan (α)", "tree", "alpha", [3, 4], torch.full((session.units,), float("nan")), "out/causal/nan"),
        Brush("short (α)", "tree", "alpha", [3, 4], torch.zeros(7), "out/causal/short"),
    ]
    with pytest.warns(UserWarning) as caught:
        painter = PaintSession(session.split.generator, session.segmenter, session.layer, brushes, kc_samples=20)
    messages = " ".join(str(w.message) for w in caught)
    assert "far (α) from out/causal/far left out: its units [999] are not in 0 … 255" in messages
    assert "nan (α)" in messages and "short (α)" in messages and "not 256 finite numbers" in messages
    assert list(painter.brushes) == ["good"]
    client = TestClient(create_app(painter), base_url="http://127.0.0.1")
    answer = client.get("/api/concepts")
    assert answer.json()["concepts"][0]["source"] == "out/dissect" and "/home" not in answer.text


def test_a_busy_port_is_a_clear_error_before_any_url(capsys):
    from lightning_gd.cli import main

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["paint", "--port", str(port), "--results", "null"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert f"port {port} on 127.0.0.1 is in use (another server?): choose another --port" in captured.err
    assert "paint at" not in captured.out and "Traceback" not in captured.err


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/edit", 405),  # a POST route
        ("PUT", "/api/sample", 405),
        ("OPTIONS", "/api/sample", 405),  # a CORS preflight gets no CORS headers, only the refusal
        ("GET", "/nonexistent", 404),
        ("GET", "/static/..%2f..%2fetc%2fpasswd", 404),
    ],
)
def test_unknown_paths_and_methods_are_json_errors(client, method, path, status):
    res = client.request(method, path, headers={"content-type": "application/json"})
    text = clean_json_error(res, status)
    assert text in ("not found", "method not allowed")
    assert "access-control-allow-origin" not in res.headers
