"""GET and HEAD of a file of the view: the source opened as the reader, then streamed.

Answered in front of wsgidav's middleware stack, for speed: through that
stack a 0.5 MB CT slice took about 2 ms, slower than Orthanc, most of it
copies of the body through four generators and cheroot's buffered writer
(BENCHMARKS.md, "WebDAV side by side with Orthanc"). Here the answer is one
``FileBody`` that ``webdav.SendfileGateway`` hands to the kernel with
``socket.sendfile``; a file served with a part10 prefix (``FileNode.prefix``)
is sent as the prefix's bytes, then the source's, through cheroot's writer.
Headers are parsed with wsgidav's helpers (ETag lists, HTTP dates, byte
ranges: one range is served, as wsgidav serves it); the preconditions are
evaluated in RFC 9110's order (13.2.2), since wsgidav's own evaluation
answers 200 to an If-Modified-Since equal to Last-Modified instead of 304.

The order is the product's rule: the source is opened (``View.open_file``
inside ``acting_as`` of the request's Unix user) before anything else is
answered, so a reader the kernel refuses gets 403, not even a 304; a source
that changed since indexing gets 503 and is looked at again (``SourceChanged``).
Generated files that name source paths (manifest.json, rejected.txt) are
made for that reader as the mount makes them: a path only where the reader
could list its folder.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, BinaryIO

from wsgidav import util
from wsgidav.dav_error import HTTP_RANGE_NOT_SATISFIABLE, DAVError

from dicomfs.fuse.caller import Caller, acting_as, reveal_for
from dicomfs.share.propfind import content_type, etag, http_date
from dicomfs.share.webdav_users import own_account
from dicomfs.view.nodes import FileNode, SourceChanged
from dicomfs.view.tree import View

log = logging.getLogger(__name__)

BLOCK_SIZE = 1 << 18  # bytes per read when the server cannot sendfile (TLS, generated files)
RETRY_AFTER = "5"  # seconds: the changed source is looked at again meanwhile

StartResponse = Callable[..., Any]


class FileBody:
    """``length`` bytes from ``offset`` of ``prefix`` then ``file``; closes the file at the end.

    An ordinary WSGI iterable; ``webdav.SendfileGateway`` sends it with
    ``socket.sendfile`` instead when ``file`` has a descriptor and there is
    no prefix (``sendfile_body``).
    """

    def __init__(self, file: BinaryIO, offset: int, length: int, prefix: bytes = b"") -> None:
        self.file = file
        self.offset = offset
        self.length = length
        self.prefix = prefix

    def __iter__(self) -> Iterator[bytes]:
        head = self.prefix[self.offset : self.offset + self.length]
        if head:
            yield head
        self.file.seek(max(self.offset - len(self.prefix), 0))
        left = self.length - len(head)
        while left > 0:
            chunk = self.file.read(min(BLOCK_SIZE, left))
            if not chunk:
                return  # the file shrank: the server sees the short body and closes
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.file.close()


def precondition(environ: dict[str, Any], tag: str, modified: int) -> str | None:
    """ "304 Not Modified", "412 Precondition Failed" or None (go on), by RFC 9110 13.2.2."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        tags = util.parse_if_match_header(if_match)
        if "*" not in tags and tag not in tags:
            return "412 Precondition Failed"
    elif "HTTP_IF_UNMODIFIED_SINCE" in environ:
        when = util.parse_time_string(environ["HTTP_IF_UNMODIFIED_SINCE"])
        if when is not None and modified > when:
            return "412 Precondition Failed"
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        tags = util.parse_if_match_header(if_none_match)
        if "*" in tags or tag in tags:
            return "304 Not Modified"  # GET and HEAD only come here
    elif "HTTP_IF_MODIFIED_SINCE" in environ:
        when = util.parse_time_string(environ["HTTP_IF_MODIFIED_SINCE"])
        if when is not None and modified <= when:
            return "304 Not Modified"
    return None


def _answer(
    start_response: StartResponse,
    status: str,
    text: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = text.encode() if text else b""
    base = [("Content-Length", str(len(body)))]
    if body:
        base.append(("Content-Type", "text/plain; charset=utf-8"))
    start_response(status, base + (headers or []))
    return [body]


def _open(view: View, node: FileNode, caller: Caller) -> tuple[BinaryIO, int, str]:
    """(stream, size, ETag) of what ``caller`` gets of ``node``.

    ``size`` counts ``node.prefix``, which the stream leaves out (``FileBody`` sends it).

    A generated file that names source paths is made again for a reader other
    than the daemon's own user, naming only the paths that reader may see.
    """
    if node.generated:
        if node.render is not None and caller != own_account():
            with acting_as(caller):
                content = node.render(reveal_for(node))
        else:
            content = node.data()
        served = node if content is node.content else replace(node, content=content)
        return io.BytesIO(content), len(content), etag(served)
    with acting_as(caller):
        fd = view.open_file(node)
    return io.FileIO(fd, "rb"), node.size, etag(node)


def _range(environ: dict[str, Any], size: int, tag: str, modified: int) -> tuple[int, int] | None:
    """(offset, length) of the one range to send, or None for the whole file."""
    header = environ.get("HTTP_RANGE")
    if not header or size == 0:
        return None
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range:
        when = util.parse_time_string(if_range)
        if (when is not None and when != modified) or (
            when is None and if_range.strip('" ') != tag
        ):
            return None  # the client's copy is stale: send everything
    ranges, _ = util.obtain_content_ranges(header, size)
    if not ranges:
        raise DAVError(HTTP_RANGE_NOT_SATISFIABLE)
    start, _end, length = ranges[0]
    return start, length


def serve_file(
    environ: dict[str, Any],
    start_response: StartResponse,
    view: View,
    node: FileNode,
    caller: Caller,
) -> list[bytes] | FileBody:
    """The whole answer to GET or HEAD of ``node`` as ``caller``."""
    try:
        file, size, tag = _open(view, node, caller)
    except PermissionError:
        # No path in the log: source folders may be named after patients.
        log.info("GET %s: permission denied to uid %d", node.name, caller.uid)
        return _answer(start_response, "403 Forbidden", "the source file may not be read by you\n")
    except SourceChanged:
        return _answer(
            start_response,
            "503 Service Unavailable",
            "the source changed since it was indexed; it is being looked at again\n",
            [("Retry-After", RETRY_AFTER)],
        )  # logged by the view
    except OSError as exc:
        log.error("opening the source of %s failed: %s", node.name, exc)
        return _answer(start_response, "500 Internal Server Error", "internal error\n")
    try:
        return _respond(environ, start_response, node, file, size, tag)
    except BaseException:
        file.close()
        raise


def _respond(
    environ: dict[str, Any],
    start_response: StartResponse,
    node: FileNode,
    file: BinaryIO,
    size: int,
    tag: str,
) -> list[bytes] | FileBody:
    modified = node.mtime_ns // 1_000_000_000
    validators = [("ETag", f'"{tag}"'), ("Last-Modified", http_date(modified))]
    try:
        refused = precondition(environ, tag, modified)
        span = None if refused else _range(environ, size, tag, modified)
    except DAVError as exc:
        file.close()
        if exc.value == HTTP_RANGE_NOT_SATISFIABLE:
            extra = [("Content-Range", f"bytes */{size}")]
            return _answer(start_response, "416 Range Not Satisfiable", "", extra)
        return _answer(start_response, "400 Bad Request", "malformed header\n")
    if refused is not None:
        file.close()
        return _answer(start_response, refused, "", validators)
    offset, length = span if span is not None else (0, size)
    headers = [
        ("Content-Length", str(length)),
        ("Content-Type", content_type(node.name)),
        ("Accept-Ranges", "bytes"),
        *validators,
    ]
    status = "200 OK"
    if span is not None:
        status = "206 Partial Content"
        headers.append(("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}"))
    start_response(status, headers)
    if environ["REQUEST_METHOD"] == "HEAD":
        file.close()
        return []
    return FileBody(file, offset, length, node.prefix)


def sendfile_body(body: object) -> FileBody | None:
    """``body`` when it can go out with ``socket.sendfile`` (a real descriptor), else None."""
    if isinstance(body, FileBody) and isinstance(body.file, io.FileIO) and not body.prefix:
        return body
    return None
