"""The outermost WSGI layer of the share: hostile paths out (404), who is asking, file reads.

It runs before wsgidav sees a request, because wsgidav resolves ``..``
itself (``/a/../b`` becomes ``/b``): a path must be made of the view's
names only (letters, digits, ``.``, ``_``, ``-``; no ``.`` or ``..``
component), at most 4,096 characters, or the answer is 404. cheroot has
decoded percent escapes once and keeps ``%2F`` as is, so an encoded slash,
backslash or NUL never matches either.

Then the reader: with a users file, HTTP Basic credentials must match a
line (else 401), and the request is served as that line's Unix user;
without one, every request is served as the configured run-as user.

Last, GET and HEAD of a file go to ``files.serve_file`` (which opens the
source as that Unix user); everything else, folders and refusals included,
goes to wsgidav, with the Unix user in ``environ[CALLER]``.

PROPFIND bodies are read into memory by wsgidav, so they are capped
(``MAX_PROPFIND_BODY``); other bodies are never read (write methods are
refused) and the connection is closed after them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable
from typing import Any

from dicomfs.fuse.caller import Caller
from dicomfs.share.dav_provider import CALLER, visible
from dicomfs.share.files import serve_file
from dicomfs.share.webdav_users import Users
from dicomfs.view.nodes import FileNode, NotADirectory, NotFound, Rebuilding
from dicomfs.view.paths import valid_path
from dicomfs.view.tree import View

log = logging.getLogger(__name__)

MAX_PATH = 4096
MAX_PROPFIND_BODY = 64 * 1024
REALM = "dicomfs"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _path_info(environ: dict[str, Any]) -> str:
    """PATH_INFO as the client wrote it: WSGI hands it over as Latin-1 (PEP 3333).

    Clients send UTF-8 (the patients/ tree has non-ASCII names), so the bytes
    are decoded again here, as wsgidav does for the requests it answers;
    what is not UTF-8 names nothing of the view.
    """
    raw = environ.get("PATH_INFO", "")
    try:
        return str(raw.encode("latin-1").decode("utf-8"))
    except UnicodeError:
        return "\x00"  # refused by safe_path


def safe_path(path: str) -> bool:
    """True when ``path`` may name something of the view (its own grammar, ``tree.valid_path``)."""
    return len(path) <= MAX_PATH and valid_path(path)


def _simple(
    start_response: StartResponse, status: str, body: bytes, extra: list[tuple[str, str]]
) -> list[bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers + extra)
    return [body]


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH", "").strip()
    return bool(length and length != "0") or "HTTP_TRANSFER_ENCODING" in environ


def _body_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH", "").strip() or 0)
    except ValueError:
        return -1


class Gate:
    """Paths, the body cap, authentication and file reads in front of ``app`` (wsgidav)."""

    def __init__(
        self, app: WsgiApp, view: View, *, users: Users | None, run_as: Caller | None
    ) -> None:
        if (users is None) == (run_as is None):
            raise ValueError("give either users or run_as")
        self.app = app
        self.view = view
        self.users = users
        self.run_as = run_as

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = _path_info(environ)
        method = environ.get("REQUEST_METHOD", "")
        close = [("Connection", "close")] if _has_body(environ) else []
        if not (method == "OPTIONS" and path == "*") and not safe_path(path):
            return _simple(start_response, "404 Not Found", b"not found\n", close)
        if method == "PROPFIND" and not 0 <= _body_length(environ) <= MAX_PROPFIND_BODY:
            return _simple(start_response, "413 Payload Too Large", b"body too large\n", close)
        if self.users is None:
            assert self.run_as is not None
            caller, user_name = self.run_as, ""
        else:
            user = self._authenticate(environ)
            if user is None:
                challenge = ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
                body = b"authentication required\n"
                return _simple(start_response, "401 Unauthorized", body, [challenge, *close])
            caller, user_name = user
        environ[CALLER], environ["wsgidav.auth.user_name"] = caller, user_name
        if method in ("GET", "HEAD") and not close:
            node = self._file(path)
            if node is not None and not visible(self.view, path, node, environ):
                # Below a patient this reader may not see: as if it did not exist.
                return _simple(start_response, "404 Not Found", b"not found\n", close)
            if node is not None:
                return serve_file(environ, start_response, self.view, node, caller)
        return self.app(environ, start_response)

    def _file(self, path: str) -> FileNode | None:
        """The file at ``path``; None for folders and misses (wsgidav answers those)."""
        try:
            node = self.view.lookup(path)
        except (NotFound, NotADirectory, Rebuilding):
            return None  # wsgidav answers: 404, or 503 while the index is rebuilt
        except Exception:
            log.exception("looking up a path failed")  # wsgidav answers 500 after its own try
            return None
        return node if isinstance(node, FileNode) else None

    def _authenticate(self, environ: dict[str, Any]) -> tuple[Caller, str] | None:
        assert self.users is not None
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        if not sep:
            return None
        user = self.users.verify(name, password)
        if user is None:
            log.warning(
                "WebDAV: wrong password or unknown user %r from %s",
                name[:64],
                environ.get("REMOTE_ADDR", "?"),
            )
            return None
        return user.caller, user.name
