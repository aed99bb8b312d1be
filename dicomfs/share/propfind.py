"""PROPFIND on the view: the Depth rule, the request body, and the multistatus written as text.

wsgidav builds a PROPFIND answer as an ElementTree, property by property
through generic getters: about 0.1 ms per entry, so a 1,000-instance series
took longer than Orthanc's WebDAV (BENCHMARKS.md, "WebDAV side by side with
Orthanc"). Here each entry is one ``str.format`` of a template made once
per request and kind of node: the same properties, a few microseconds each.
The request body is still parsed by wsgidav (``util.parse_xml_body``:
defusedxml, 400 on malformed XML).

Answered properties, all live: ``resourcetype``, ``displayname``,
``getlastmodified``, and for files ``getcontentlength``, ``getcontenttype``
and ``getetag``. Any other property asked for by name gets a 404 propstat.
No locks and no dead properties: the share is read-only.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)

from dicomfs.view.nodes import DirNode, FileNode, Node

CONTENT_TYPES = {
    ".dcm": "application/dicom",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
_DAV = "{DAV:}"
_OK = "<D:status>HTTP/1.1 200 OK</D:status>"
_NOT_FOUND = "<D:status>HTTP/1.1 404 Not Found</D:status>"
_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
_TAIL = "</D:multistatus>"
FOLDER_PROPERTIES = ("resourcetype", "displayname", "getlastmodified")
FILE_PROPERTIES = (*FOLDER_PROPERTIES, "getcontentlength", "getcontenttype", "getetag")


def content_type(name: str) -> str:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:] if dot > 0 else "", "application/octet-stream")


def etag(node: FileNode) -> str:
    """Strong ETag without quotes: the source's identity, or a digest of generated content."""
    if node.generated:
        return "g" + hashlib.blake2b(node.data(), digest_size=12).hexdigest()
    return f"{node.dev:x}-{node.inode:x}-{node.size:x}-{node.mtime_ns:x}"


@functools.lru_cache(maxsize=4096)
def http_date(seconds: int) -> str:
    """RFC 1123 date, as wsgidav writes Last-Modified (many entries share a second)."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


def depth(environ: dict[str, Any]) -> str:
    """Depth "0" or "1"; "infinity" is refused with 403 (RFC 4918 9.1, propfind-finite-depth).

    No Depth header at all means infinity by the RFC, but clients send none
    when they want one resource's properties (webdav4's ``info``); it is
    answered as Depth 1, as sabre/dav (Nextcloud) answers it.
    """
    value = str(environ.get("HTTP_DEPTH", "1")).strip().lower()
    if value == "infinity":
        raise DAVError(
            HTTP_FORBIDDEN,
            "PROPFIND with Depth: infinity is not served; ask for Depth 0 or 1",
            err_condition=PRECONDITION_CODE_PropfindFiniteDepth,
        )
    if value not in ("0", "1"):
        raise DAVError(HTTP_BAD_REQUEST, f"invalid Depth header {value[:20]!r}")
    return value


def requested(environ: dict[str, Any]) -> tuple[str, list[str]]:
    """("allprop" | "propname" | "prop", Clark names asked for) from the request body."""
    body = util.parse_xml_body(environ, allow_empty=True)
    if body is None:
        return "allprop", []  # an empty body asks for all properties (RFC 4918 9.1)
    if body.tag != _DAV + "propfind":
        raise DAVError(HTTP_BAD_REQUEST, "expected a DAV:propfind body")
    kinds = [child.tag for child in body if child.tag in (_DAV + "allprop", _DAV + "propname")]
    props = [child for child in body if child.tag == _DAV + "prop"]
    if len(kinds) + len(props) != 1:
        raise DAVError(HTTP_BAD_REQUEST, "expected one of allprop, propname or prop")
    if kinds:
        return kinds[0][len(_DAV) :], []
    return "prop", [str(element.tag) for element in props[0]]


def href(path: str, is_folder: bool) -> str:
    """The quoted href of a view path; folders end with "/" (as wsgidav writes them)."""
    path = "/" + path.strip("/")
    if is_folder and path != "/":
        path += "/"
    return quote(path, safe="/!*'(),$-_|.")


def _fields(node: Node) -> tuple[str, ...]:
    """The values of ``node``'s live properties, in the order of ``FILE_PROPERTIES``[1:]."""
    name = node.name
    if "&" in name or "<" in name or ">" in name:  # never in the view's names; still XML
        name = escape(name)
    when = http_date(node.mtime_ns // 1_000_000_000)
    if isinstance(node, DirNode):
        return name, when
    return name, when, str(node.size), content_type(name), f'"{etag(node)}"'


def _element(clark: str, inner: str = "") -> str:
    """One property element; a namespace other than DAV: is declared on the element."""
    if clark.startswith(_DAV):
        local, prefix, declaration = clark[len(_DAV) :], "D:", ""
    elif clark.startswith("{"):
        namespace, local = clark[1:].split("}", 1)
        prefix, declaration = "N:", f" xmlns:N={quoteattr(namespace)}"
    else:
        local, prefix, declaration = clark, "", ""
    if not inner:
        return f"<{prefix}{local}{declaration}/>"
    return f"<{prefix}{local}{declaration}>{inner}</{prefix}{local}>"


def _template(props: tuple[str, ...], mode: str, names: list[str]) -> str:
    """The text of one <response> for a kind of node: field 0 is the href, then ``_fields``."""
    found: list[str] = []
    missing: list[str] = []
    if mode == "allprop":
        found = list(props)
    elif mode != "propname":
        found = [n[len(_DAV) :] for n in names if n.startswith(_DAV) and n[len(_DAV) :] in props]
        missing = [n for n in names if not (n.startswith(_DAV) and n[len(_DAV) :] in props)]
    inner = []
    for name in found:
        if name == "resourcetype":
            value = "<D:collection/>" if props is FOLDER_PROPERTIES else ""
        else:
            value = f"{{{FILE_PROPERTIES.index(name)}}}"  # a format field; 0 is the href
        inner.append(_element(_DAV + name, value))
    if mode == "propname":
        inner = [_element(_DAV + name) for name in props]
    out = ["<D:response><D:href>{0}</D:href>"]
    if inner or not missing:
        out.append(f"<D:propstat><D:prop>{''.join(inner)}</D:prop>{_OK}</D:propstat>")
    if missing:
        gone = "".join(_element(n) for n in missing).replace("{", "{{").replace("}", "}}")
        out.append(f"<D:propstat><D:prop>{gone}</D:prop>{_NOT_FOUND}</D:propstat>")
    out.append("</D:response>")
    return "".join(out)


def multistatus(entries: Iterable[tuple[str, Node]], mode: str, names: list[str]) -> bytes:
    """The 207 body for (href, node) entries, in order.

    The text around the values is made once per kind of node for the
    request, so each entry costs one ``str.format``.
    """
    folder = _template(FOLDER_PROPERTIES, mode, names)
    file = _template(FILE_PROPERTIES, mode, names)
    parts = [_HEAD]
    for link, node in entries:
        template = folder if isinstance(node, DirNode) else file
        parts.append(template.format(link, *_fields(node)))
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")
