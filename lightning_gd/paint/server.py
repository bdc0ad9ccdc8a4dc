"""The painting page's web app (Starlette, served by uvicorn on 127.0.0.1): the page at `/` and a JSON API that
the page uses and a script can call.

    GET  /api/concepts                      the palette, the layer, its featuremap size, the strengths
    POST /api/sample   {"seed": 7}          a new image (seed optional) → {"id", "seed", "image", "segmentation", …}
    POST /api/edit     {"id", "action": "draw"|"remove", "concept", "mask": [[0|1, …], …], "n": 10}
    POST /api/undo     {"id"}               drop the last stroke
    POST /api/reset    {"id"}               drop every stroke

Images come back as PNG data URLs. Bodies are JSON objects of at most `MAX_BODY` bytes; every error is a JSON
object {"error": message} with a 4xx status. Nothing in a request names a file, and nothing is unpickled.
"""

from __future__ import annotations

import json
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from lightning_gd.paint.session import PaintError, PaintSession

MAX_BODY = 64 * 1024  # bytes: a 64×64 featuremap mask as JSON is ~17 KB


def page() -> str:
    return resources.files("lightning_gd.paint").joinpath("page.html").read_text(encoding="utf-8")


async def _body(request: Request) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise PaintError(f"request body too large (at most {MAX_BODY} bytes)", 413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise PaintError(f"request body too large (at most {MAX_BODY} bytes)", 413)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PaintError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise PaintError("the request body must be a JSON object")
    return body


def _field(body: dict, name: str, default=None, required: bool = True):
    if name not in body:
        if required:
            raise PaintError(f"missing field {name!r}")
        return default
    return body[name]


def create_app(session: PaintSession) -> Starlette:
    """The app serving `session`: the page and the JSON API."""

    def handler(fn):
        async def endpoint(request: Request):
            try:
                body = await _body(request) if request.method == "POST" else {}
                return JSONResponse(fn(body))
            except PaintError as err:
                return JSONResponse({"error": str(err)}, status_code=err.status)

        return endpoint

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page())

    routes = [
        Route("/", index),
        Route("/api/concepts", handler(lambda body: session.palette())),
        Route("/api/sample", handler(lambda b: session.sample(_field(b, "seed", None, False))), methods=["POST"]),
        Route(
            "/api/edit",
            handler(lambda b: session.edit(*(_field(b, k) for k in ("id", "action", "concept", "mask", "n")))),
            methods=["POST"],
        ),
        Route("/api/undo", handler(lambda b: session.undo(_field(b, "id"))), methods=["POST"]),
        Route("/api/reset", handler(lambda b: session.reset(_field(b, "id"))), methods=["POST"]),
    ]
    return Starlette(routes=routes)
