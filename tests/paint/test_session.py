"""The painting session and its JSON API (Starlette's test client): sample, draw, remove, undo, reset; an edit
equals `interventions.insert` / `ablate` on the same z and mask; bad requests get a 4xx with a clear message."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from lightning_gd.causal.interventions import ablate, insert
from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from lightning_gd.paint.server import MAX_BODY, create_app

BRUSH = "building (IoU)"


def decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def square(session, y0: int, x0: int, k: int = 3) -> list[list[int]]:
    h, w = session.size
    return [[int(y0 <= y < y0 + k and x0 <= x < x0 + k) for x in range(w)] for y in range(h)]


@pytest.fixture(scope="module")
def client(session):
    return TestClient(create_app(session), base_url="http://127.0.0.1")  # the server answers its own address only


def test_palette_names_concepts_of_the_layer(client, session):
    p = client.get("/api/concepts").json()
    assert p["layer"] == "layer4" and p["featuremap"] == [8, 8] and p["units"] == 256
    assert p["strengths"] == [5, 10, 20, 40, 80] and {c["ranking"] for c in p["concepts"]} == {"iou"}
    assert BRUSH in [c["name"] for c in p["concepts"]] and len(p["concepts"]) >= 5
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/api/edit" in page.text


def test_draw_remove_undo_equal_the_intervention_functions(client, session):
    first = client.post("/api/sample", json={"seed": 11}).json()
    key, brush = first["id"], session.brushes[BRUSH]
    z = latents([11], session.split.z_dim, 0)
    r0 = session.split.h(z)
    mask = square(session, 4, 1)
    m = torch.tensor(mask, dtype=torch.float32)[None, None]
    drawn = client.post("/api/edit", json={"id": key, "action": "draw", "concept": BRUSH, "mask": mask,
                                           "n": 10}).json()  # fmt: skip
    r1 = insert(r0, brush.units[:10], session.k_c(brush), m)
    torch.testing.assert_close(session.featuremap(key), r1, atol=1e-6, rtol=0)
    assert np.array_equal(decode(drawn["image"]), to_uint8(session.split.f(r1))[0].permute(1, 2, 0).numpy())
    assert drawn["edits"] == 1 and not np.array_equal(decode(drawn["image"]), decode(first["image"]))
    removed = client.post("/api/edit", json={"id": key, "action": "remove", "concept": BRUSH,
                                             "mask": square(session, 1, 4), "n": 20}).json()  # fmt: skip
    r2 = ablate(r1, brush.units[:20], torch.tensor(square(session, 1, 4), dtype=torch.float32)[None, None])
    torch.testing.assert_close(session.featuremap(key), r2, atol=1e-6, rtol=0)
    assert removed["edits"] == 2
    undone = client.post("/api/undo", json={"id": key}).json()
    assert undone["edits"] == 1 and np.array_equal(decode(undone["image"]), decode(drawn["image"]))
    reset = client.post("/api/reset", json={"id": key}).json()
    assert reset["edits"] == 0 and np.array_equal(decode(reset["image"]), decode(first["image"]))
    assert drawn["ms"] > 0  # the render time the page shows (measured by bench/paint.py)


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/edit", {"id": "nope", "action": "draw", "concept": BRUSH, "mask": [], "n": 5}, 404,
         "unknown image id"),
        ("/api/edit", {"action": "draw"}, 400, "missing field 'id'"),
        ("/api/edit", {"id": "KEY", "action": "paint", "concept": BRUSH, "mask": "M", "n": 5}, 400,
         "action must be one of draw, remove"),
        ("/api/edit", {"id": "KEY", "action": "draw", "concept": "../etc/passwd", "mask": "M", "n": 5}, 400,
         "unknown concept"),
        ("/api/edit", {"id": "KEY", "action": "draw", "concept": BRUSH, "mask": [[1]], "n": 5}, 400,
         "mask must be 8 rows of 8 values 0 or 1"),
        ("/api/edit", {"id": "KEY", "action": "draw", "concept": BRUSH, "mask": "Z", "n": 5}, 400,
         "the mask is empty"),
        ("/api/edit", {"id": "KEY", "action": "draw", "concept": BRUSH, "mask": "M", "n": 999}, 400,
         r"n \(the number of units\) must be an integer in \[1, 256\]"),
        ("/api/sample", {"seed": -3}, 400, "seed must be an integer"),
        ("/api/sample", {"seed": "7"}, 400, "seed must be an integer"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_clear_4xx(client, session, path, body, status, message):
    import re

    key = client.post("/api/sample", json={"seed": 1}).json()["id"]
    fill = {"KEY": key, "M": square(session, 0, 0), "Z": square(session, 0, 0, 0)}
    body = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    res = client.post(path, json=body)
    assert res.status_code == status and re.search(message, res.json()["error"]), res.json()


def test_malformed_and_oversized_bodies(client):
    res = client.post("/api/sample", content=b"{not json", headers={"content-type": "application/json"})
    assert res.status_code == 400 and res.json()["error"] == "the request body is not JSON"
    json_body = {"content-type": "application/json"}
    res = client.post("/api/sample", content=b"[1, 2]", headers=json_body)
    assert res.status_code == 400 and "JSON object" in res.json()["error"]
    big = json.dumps({"seed": 1, "pad": "x" * MAX_BODY}).encode()
    res = client.post("/api/sample", content=big, headers=json_body)
    assert res.status_code == 413 and "too large" in res.json()["error"]
    assert client.get("/api/edit").status_code == 405


@pytest.mark.parametrize("insertion", ["k_c*4", "q0.99"])
def test_a_session_draws_with_its_insertion_constant(session, insertion):
    from lightning_gd.causal.interventions import insertion_values
    from lightning_gd.paint.session import PaintSession

    brushes = [session.brushes[BRUSH]]
    G, seg = session.split.generator, session.segmenter
    other = PaintSession(G, seg, "layer4", brushes, kc_samples=20, insertion=insertion)
    other.prepare(progress=False)
    key = other.sample(seed=11)["id"]
    mask = square(other, 2, 2)
    other.edit(key, "draw", BRUSH, mask, 10)
    r0 = other.split.h(latents([11], other.split.z_dim, 0))
    value = insertion_values(insertion, session.k_c(session.brushes[BRUSH]), other.split, n=20, progress=False)
    expected = insert(r0, brushes[0].units[:10], value, torch.tensor(mask, dtype=torch.float32)[None, None])
    torch.testing.assert_close(other.featuremap(key), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(value, session.k_c(session.brushes[BRUSH]))  # really another constant
