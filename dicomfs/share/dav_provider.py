"""The view as a read-only wsgidav provider: folders and files by path, and PROPFIND.

wsgidav asks this provider for resources by path and answers OPTIONS and
every refusal itself. The provider is read-only, so PUT, DELETE, MKCOL,
COPY, MOVE, PROPPATCH, POST, LOCK and UNLOCK never reach it (405), and no
lock or property manager is configured (``webdav.build_app``).

Two requests are not left to wsgidav's generic code:

- PROPFIND is answered here (``custom_request_handler``) with Depth 0 or 1
  only (``propfind.depth`` refuses infinity, 403 ``DAV:propfind-finite-depth``;
  no Depth header is taken as 1) and one listing of the view, written by
  ``propfind.multistatus``.
- GET and HEAD of a file never get here: ``gate.py`` hands them to
  ``files.py``, which opens the source as the request's Unix user. So that
  no other path can ever serve a source's bytes, ``get_content`` refuses a
  source file (only generated files have content here).

Names, sizes and times are exactly the view's, so the share lists what the
mount lists. As on a shared mount, a folder of ``patients/`` (named after
patient data) exists only for a reader who may read the file it stands for
(``fuse.caller.shown_to``, asked as the request's Unix user): a lookup of
one, or of anything below it, is 404 like a missing path, and listings leave
it out. Requests are always served as some Unix user (``gate.py``), so the
rule always applies; for the daemon's own user the switch is a no-op.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.dav_error import (
    HTTP_INTERNAL_ERROR,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from dicomfs.fuse.caller import Caller, shown_to
from dicomfs.share import propfind
from dicomfs.share.propfind import content_type, etag
from dicomfs.view.nodes import DirNode, FileNode, Node, NotADirectory, NotFound, Rebuilding
from dicomfs.view.tree import View

log = logging.getLogger(__name__)

CALLER = "dicomfs.caller"  # environ key: the Caller a request is served as
_RESOURCES = "dicomfs.resources"  # environ key: resources made for this request
_WITNESSED_TOP = "patients"  # the only tree whose folders have witnesses (view.patients)

StartResponse = Callable[..., Any]
Handler = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def internal_error(what: str, exc: BaseException) -> DAVError:
    """500 with nothing of the exception in the answer: it may name source folders."""
    log.error("%s failed: %s", what, exc, exc_info=not isinstance(exc, OSError))
    return DAVError(HTTP_INTERNAL_ERROR, "internal error (see the server's log)")


def _caller(environ: dict[str, Any]) -> Callable[[], Caller]:
    """Who ``environ``'s request is served as (``gate.py`` always says)."""

    def who() -> Caller:
        caller = environ.get(CALLER)
        if not isinstance(caller, Caller):
            raise PermissionError("a request without a reader")  # never: gate.py sets it
        return caller

    return who


def readable_entries(
    listing: list[tuple[str, Node]], environ: dict[str, Any]
) -> list[tuple[str, Node]]:
    """``listing`` without the folders the request's reader may not see (one switch)."""
    return shown_to(_caller(environ), listing)


def visible(view: View, path: str, node: Node, environ: dict[str, Any]) -> bool:
    """May the request's reader see ``node`` at ``path``: it and every folder above it?

    The mount gets this from the kernel, which looks each folder of a path
    up in turn; here the whole path comes at once, so the folders above are
    checked too (cached lookups, one open per witness, one switch).
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0] != _WITNESSED_TOP:
        return True
    above = [(name, view.lookup("/".join(parts[:end]))) for end, name in enumerate(parts[1:-1], 2)]
    chain = [*above, (parts[-1], node)]
    return len(readable_entries(chain, environ)) == len(chain)


class _NodeProperties:
    """What folders and files describe alike: a name and a time from their view node."""

    node: Node

    def get_display_name(self) -> str:
        return self.node.name

    def get_last_modified(self) -> float:
        return self.node.mtime_ns / 1e9

    def get_creation_date(self) -> None:
        return None


class FolderResource(_NodeProperties, DAVCollection):  # type: ignore[misc]
    """A folder of the view; its members come from one ``listdir`` (no lookup per member)."""

    node: DirNode

    def __init__(self, path: str, environ: dict[str, Any], node: DirNode, view: View) -> None:
        super().__init__(path, environ)
        self.node = node
        self.view = view

    def get_member_names(self) -> list[str]:
        return [name for name, _ in self._listing()]

    def get_member(self, name: str) -> Resource | None:
        provider: ViewProvider = self.provider
        return provider.get_resource_inst(self.path.rstrip("/") + "/" + name, self.environ)

    def get_member_list(self) -> list[Resource]:
        base = self.path.rstrip("/")
        return [
            make_resource(f"{base}/{name}", self.environ, node, self.view)
            for name, node in self._listing()
        ]

    def _listing(self) -> list[tuple[str, Node]]:
        return readable_entries(self.view.listdir(self.path), self.environ)


class FileResource(_NodeProperties, DAVNonCollection):  # type: ignore[misc]
    """A file of the view, as wsgidav describes it; its bytes are served by ``files.py``."""

    node: FileNode

    def __init__(self, path: str, environ: dict[str, Any], node: FileNode, view: View) -> None:
        super().__init__(path, environ)
        self.node = node
        self.view = view

    def get_content_length(self) -> int:
        return self.node.size

    def get_content_type(self) -> str:
        return content_type(self.node.name)

    def get_etag(self) -> str:
        return etag(self.node)

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> io.BytesIO:
        if not self.node.generated:
            # Source bytes go out only through files.py, opened as the reader.
            raise DAVError(HTTP_INTERNAL_ERROR, "source files are not served on this path")
        return io.BytesIO(self.node.data())


Resource = FolderResource | FileResource


def make_resource(path: str, environ: dict[str, Any], node: Node, view: View) -> Resource:
    if isinstance(node, DirNode):
        return FolderResource(path, environ, node, view)
    return FileResource(path, environ, node, view)


class ViewProvider(DAVProvider):  # type: ignore[misc]
    """One share: the whole view at the server's root."""

    def __init__(self, view: View) -> None:
        super().__init__()
        self.view = view

    def is_readonly(self) -> bool:
        return True

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Resource | None:
        """The resource at ``path``, made once per request (wsgidav asks several times)."""
        made: dict[str, Resource | None] = environ.setdefault(_RESOURCES, {})
        if path in made:
            return made[path]
        try:
            node = self.view.lookup(path)
        except (NotFound, NotADirectory):
            resource = None
        except Rebuilding:
            raise _rebuilding() from None
        except Exception as exc:
            raise internal_error(f"looking up {path}", exc) from None
        else:
            resource = make_resource(path, environ, node, self.view)
            if not self._visible(path, node, environ):
                resource = None  # exactly as a path that does not exist
        made[path] = resource
        return resource

    def _visible(self, path: str, node: Node, environ: dict[str, Any]) -> bool:
        try:
            return visible(self.view, path, node, environ)
        except (NotFound, NotADirectory):
            return False  # a folder above went away meanwhile
        except Rebuilding:
            raise _rebuilding() from None
        except Exception as exc:
            raise internal_error(f"checking who may see {path}", exc) from None

    def custom_request_handler(
        self, environ: dict[str, Any], start_response: StartResponse, default_handler: Handler
    ) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "PROPFIND":
            return self._propfind(environ, start_response)
        return default_handler(environ, start_response)

    def _propfind(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Depth 0 or 1 only; the entries come from the view's own listing."""
        depth = propfind.depth(environ)
        resource = self.get_resource_inst(environ["PATH_INFO"], environ)
        if resource is None:
            raise DAVError(HTTP_NOT_FOUND)
        mode, names = propfind.requested(environ)
        is_folder = isinstance(resource, FolderResource)
        link = propfind.href(resource.path, is_folder)
        entries: list[tuple[str, Node]] = [(link, resource.node)]
        if depth == "1" and is_folder:
            try:
                listing = readable_entries(self.view.listdir(resource.path), environ)
            except Rebuilding:
                raise _rebuilding() from None
            except Exception as exc:
                raise internal_error(f"listing {resource.path}", exc) from None
            base = link if link.endswith("/") else link + "/"
            entries.extend(
                (base + name + ("/" if isinstance(node, DirNode) else ""), node)
                for name, node in listing
            )
        body = propfind.multistatus(entries, mode, names)
        start_response(
            "207 Multi-Status",
            [
                ("Content-Type", "application/xml; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Date", propfind.http_date(int(time.time()))),
            ],
        )
        return [body]


def _rebuilding() -> DAVError:
    """503 while the index is rebuilt: an empty listing would read as files gone (E6)."""
    return DAVError(HTTP_SERVICE_UNAVAILABLE, "the index is being rebuilt; try again shortly")
