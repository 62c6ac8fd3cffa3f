"""Serve the PWA in ``web/`` at ``/``.

A small ASGI mount rather than a generic static router, because the PWA needs
cache headers per kind of file and real revalidation:

- Every response carries a strong ``ETag`` (a hash of the bytes) and answers
  ``If-None-Match`` with ``304``, so a phone on a poor connection pays a few
  hundred bytes to learn its cached copy is current. Text files go out gzipped
  to clients that accept it (compressed once per file version, tag ``…-gz"``).
- ``index.html``, ``sw.js``, the manifest, scripts and styles are ``no-cache``
  (always revalidated): file names carry no content hash, and the service
  worker keeps the offline copy. Icons are immutable enough for a week.
- ``/config.json`` tells the PWA how to log in (the dev issuer's form, or
  Authorization Code + PKCE against the configured OIDC issuer).

Register the handlers LAST in the app's route list. They only claim the
folders and root files of ``web/``, never ``/api``.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import msgspec
from litestar import asgi
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

from api.errors import send_problem
from core.errors import NotFound
from core.settings import Settings, load_settings

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

# OAuth client id of the PWA at a real OIDC provider (a public client, PKCE).
PWA_CLIENT_ID = "ticketbuster-pwa"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
}
_LONG_LIVED = {".png", ".ico", ".woff2"}
# Longest path (after the leading "/") worth asking the file system about; ours are short.
MAX_PATH_CHARS = 255


class WebConfig(msgspec.Struct, frozen=True):
    """What the PWA needs to know before its first API call."""

    auth_mode: str  # "dev" (form against the dev issuer) or "oidc" (PKCE)
    issuer: str
    client_id: str
    audience: str


# Text is sent gzipped to clients that accept it (a phone on a poor connection
# downloads ~4x less); images are compressed already.
_COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".json", ".webmanifest", ".svg", ".txt"}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    etag: str
    content_type: str
    cache_control: str
    mtime_ns: int
    gzipped: bytes | None = None

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'


class _Assets:
    """Reads files under ``root`` on demand; remembers bytes and hash per mtime."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, _Asset] = {}

    def resolve(self, url_path: str) -> Path | None:
        """The file under the root that ``url_path`` names, or None (answered 404)."""
        rel = url_path.lstrip("/") or "index.html"
        if len(rel) > MAX_PATH_CHARS or "\x00" in rel or "\\" in rel:
            return None
        try:
            candidate = (self.root / rel).resolve()
            if candidate != self.root and self.root not in candidate.parents:
                return None  # "..": outside web/
            if candidate.is_dir():
                candidate = candidate / "index.html"
            if not candidate.is_file():
                return None
        except (OSError, RuntimeError, ValueError):
            # A name the file system refuses (too long, bad bytes) or a symlink loop
            # (RuntimeError before Python 3.13): no such file, not a server error.
            return None
        return candidate

    def get(self, path: Path) -> _Asset:
        mtime_ns = path.stat().st_mtime_ns
        cached = self._cache.get(path)
        if cached is not None and cached.mtime_ns == mtime_ns:
            return cached
        body = path.read_bytes()
        suffix = path.suffix.lower()
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
        gzipped = None
        if suffix in _COMPRESSIBLE and len(body) > 512:
            gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        asset = _Asset(
            body=body,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            content_type=content_type or "application/octet-stream",
            cache_control=("public, max-age=604800" if suffix in _LONG_LIVED else "no-cache"),
            mtime_ns=mtime_ns,
            gzipped=gzipped,
        )
        self._cache[path] = asset
        return asset


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _etag_matches(if_none_match: bytes | None, *etags: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.decode("latin-1").split(",")]
    return "*" in tags or any(etag in tags for etag in etags)


def _accepts_gzip(scope: Scope) -> bool:
    accept = (_header(scope, b"accept-encoding") or b"").decode("latin-1").lower()
    for item in accept.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def _send(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# Folders of web/ served under their own prefix (mounts at these prefixes never
# shadow /api), and the few files that must live at the root: the shell, the
# service worker (its scope is its folder), the manifest and the favicon.
WEB_FOLDERS = ("js", "css", "i18n", "icons", "vendor")
ROOT_FILES = ("/", "/index.html", "/sw.js", "/manifest.webmanifest", "/favicon.ico", "/robots.txt")


def create_web_handlers(
    settings: Settings | None = None, root: Path | None = None
) -> list[ASGIRouteHandler]:
    """Route handlers serving the PWA; add them last to the app's route handlers.

    Not one mount at ``/``: Litestar resolves a root mount before any path with
    parameters, so it would shadow ``/api/v1/events/{event_id}``.
    """
    settings = settings or load_settings()
    assets = _Assets(root or Path(os.environ.get("TB_WEB_ROOT", WEB_ROOT)))
    config = msgspec.json.encode(
        WebConfig(
            auth_mode="dev" if settings.auth.dev_issuer_enabled else "oidc",
            issuer=settings.auth.issuer,
            client_id=PWA_CLIENT_ID,
            audience=settings.auth.audience,
        )
    )

    async def serve_web(scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        # A mount sees its path relative to the prefix; raw_path is the full one.
        raw = scope.get("raw_path") or scope.get("path", "/").encode()
        path = unquote(bytes(raw).decode("latin-1").split("?", 1)[0])
        if method not in ("GET", "HEAD"):
            await _send(send, 405, [(b"allow", b"GET, HEAD"), (b"content-length", b"0")])
            return
        if path == "/config.json":
            headers = [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-cache"),
                (b"content-length", str(len(config)).encode()),
            ]
            await _send(send, 200, headers, b"" if method == "HEAD" else config)
            return
        file_path = assets.resolve(path)
        asset = None
        if file_path is not None:
            try:
                asset = assets.get(file_path)
            except OSError:  # removed or unreadable since resolve() saw it
                asset = None
        if asset is None:
            request_id = (scope.get("state") or {}).get("request_id")
            await send_problem(send, NotFound("no such file"), request_id=request_id)
            return
        use_gzip = asset.gzipped is not None and _accepts_gzip(scope)
        body = asset.gzipped if use_gzip and asset.gzipped is not None else asset.body
        etag = asset.gzip_etag if use_gzip else asset.etag
        headers = [
            (b"etag", etag.encode()),
            (b"cache-control", asset.cache_control.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if asset.gzipped is not None:
            headers.append((b"vary", b"Accept-Encoding"))
        # Either representation's tag proves the client holds the current bytes.
        if _etag_matches(_header(scope, b"if-none-match"), asset.etag, asset.gzip_etag):
            await _send(send, 304, headers)
            return
        headers += [
            (b"content-type", asset.content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if use_gzip:
            headers.append((b"content-encoding", b"gzip"))
        await _send(send, 200, headers, b"" if method == "HEAD" else body)

    handlers: list[ASGIRouteHandler] = [
        asgi(
            f"/{folder}",
            is_mount=True,
            name=f"web-{folder}",
            include_in_schema=False,
            copy_scope=False,
        )(serve_web)
        for folder in WEB_FOLDERS
    ]
    handlers.append(
        asgi(
            path=[*ROOT_FILES, "/config.json"],
            name="web-root",
            include_in_schema=False,
            copy_scope=False,
        )(serve_web)
    )
    return handlers
