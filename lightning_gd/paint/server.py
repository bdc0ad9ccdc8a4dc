"""The painting page's web app (Starlette, served by uvicorn on 127.0.0.1): the page at `/` and a JSON API that
the page uses and a script can call.

    GET  /api/concepts                      the palette, the layer, its featuremap size, the strengths
    POST /api/sample   {"seed": 7}          a new image (seed optional) → {"id", "seed", "image", "segmentation", …}
    POST /api/edit     {"id", "action": "draw"|"remove", "concept", "mask": [[0|1, …], …], "n": 10}
    POST /api/undo     {"id"}               drop the last stroke
    POST /api/reset    {"id"}               drop every stroke

Images come back as PNG data URLs. Bodies are JSON objects of at most `MAX_BODY` bytes; every error is a JSON
object {"error": message} with a 4xx status (5xx for a bug, whose traceback goes to the server's console only).
Nothing in a request names a file, nothing is unpickled, and no answer holds an absolute local path.

A server on 127.0.0.1 is still reachable by every web page the user opens: a page can POST a "simple" (text/plain)
request to it, and a DNS-rebinding page can read its answers under the page's own host name. So every request
must carry a `Host` that names this server (the bound address, localhost or an IP address, with its port), and
every POST must be `application/json` (which a cross-origin page cannot send without a preflight this server never
grants) with, when the browser sends one, an `Origin` of this server.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import traceback
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from lightning_gd.paint.session import PaintError, PaintSession

MAX_BODY = 64 * 1024  # bytes: a 64×64 featuremap mask as JSON is ~17 KB
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def page() -> str:
    return resources.files("lightning_gd.paint").joinpath("page.html").read_text(encoding="utf-8")


def _split_host(value: str) -> tuple[str, int | None]:
    """`name:port`, `[v6]:port` or a bare name → (name, port or None); the name lower-cased, no brackets."""
    name, port = value.strip().lower(), None
    if name.startswith("["):
        inside, _, rest = name[1:].partition("]")
        name, rest = inside, rest
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif name.count(":") == 1:
        name, _, tail = name.partition(":")
        port = int(tail) if tail.isdigit() else -1
    return name, port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str | None, bound: str, port: int | None) -> bool:
    """Whether a request's `Host` names this server: the bound address, localhost, or any IP address (a
    rebinding page reaches the server under its own domain name, never under an address), with this port."""
    if not header:
        return False
    name, given = _split_host(header)
    if port is not None and given not in (port, None if port == 80 else port):
        return False
    return name in (bound.lower().strip("[]"), *LOCAL_NAMES) or _is_ip(name)


def _check_request(request: Request, bound: str, port: int | None) -> None:
    host = request.headers.get("host")
    if not host_allowed(host, bound, port):
        raise PaintError("this server answers only requests addressed to it (its address or localhost)", 421)
    if request.method != "POST":
        return
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise PaintError("POST bodies must be sent as application/json", 415)
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
        raise PaintError("cross-origin requests are refused: use the page this server serves", 403)


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
    except RecursionError:  # a small body can nest deeper than the parser's stack
        raise PaintError("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise PaintError("the request body must be a JSON object")
    return body


def _field(body: dict, name: str, default=None, required: bool = True):
    if name not in body:
        if required:
            raise PaintError(f"missing field {name!r}")
        return default
    return body[name]


def public_path(text: str) -> str:
    """A path as an answer may show it: relative to the working folder when under it, else its last two parts
    (an absolute path would tell any page that reads the answer about the user's files)."""
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(Path(*path.parts[-2:])) if len(path.parts) > 2 else path.name


def _palette(session: PaintSession) -> dict:
    answer = session.palette()
    for concept in answer.get("concepts", []):
        if isinstance(concept.get("source"), str):
            concept["source"] = public_path(concept["source"])
    return answer


def create_app(session: PaintSession, host: str = "127.0.0.1", port: int | None = None) -> Starlette:
    """The app serving `session` as `host:port` (port None: any): the page and the JSON API."""

    def guarded(respond):
        async def endpoint(request: Request):
            try:
                _check_request(request, host, port)
                return await respond(request)
            except PaintError as err:
                return JSONResponse({"error": str(err)}, status_code=err.status)
            except Exception:  # a bug: its traceback on the console, a plain answer to the page
                traceback.print_exc(file=sys.stderr)
                return JSONResponse({"error": "internal error in the painting server (see its console)"}, 500)

        return endpoint

    def handler(fn):
        async def respond(request: Request):
            body = await _body(request) if request.method == "POST" else {}
            return JSONResponse(fn(body))

        return guarded(respond)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page())

    routes = [
        Route("/", guarded(index)),
        Route("/api/concepts", handler(lambda body: _palette(session))),
        Route("/api/sample", handler(lambda b: session.sample(_field(b, "seed", None, False))), methods=["POST"]),
        Route(
            "/api/edit",
            handler(lambda b: session.edit(*(_field(b, k) for k in ("id", "action", "concept", "mask", "n")))),
            methods=["POST"],
        ),
        Route("/api/undo", handler(lambda b: session.undo(_field(b, "id"))), methods=["POST"]),
        Route("/api/reset", handler(lambda b: session.reset(_field(b, "id"))), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # an unknown path or a wrong method: JSON like every other error (Starlette answers them as plain text)
        return JSONResponse({"error": str(exc.detail).lower()}, status_code=exc.status_code)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
