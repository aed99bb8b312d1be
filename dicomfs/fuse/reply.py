"""The reply of ``read_buf``: a ``fuse_bufvec`` of memory and descriptor buffers.

libfuse reads (or splices) a descriptor buffer itself, in C, so the bytes of
a source never pass through Python. A reply is one buffer: generated
content (memory) or the source's descriptor; with the view's part10 setting
a read that covers part of a file's prefix is two, that part of the prefix
(memory) then the source's descriptor from its start. libfuse frees the
vector and every memory buffer's ``mem`` with free(), so both come from
malloc (``binding`` declares the vector and says why).
"""

from __future__ import annotations

import ctypes

from dicomfs.fuse.binding import FUSE_BUF_FD_SEEK, FUSE_BUF_IS_FD, FuseBuf, FuseBufvec, libc

# A buffer of a reply: bytes (memory) or (size, position) of the descriptor.
Segment = bytes | tuple[int, int]


def segments(content: bytes | None, prefix: bytes, size: int, offset: int) -> list[Segment]:
    """What answers a read of ``size`` bytes at ``offset``: of ``content``, or ``prefix`` + file."""
    if content is not None:
        return [content[offset : offset + size]]
    head = prefix[offset : offset + size]
    if head and len(head) == size:
        return [head]
    tail = (size - len(head), max(offset - len(prefix), 0))
    return [head, tail] if head else [tail]


def reply_vector(parts: list[Segment], fd: int) -> int:
    """The address of a malloc'd ``fuse_bufvec`` of ``parts``; MemoryError when malloc fails."""
    size = ctypes.sizeof(FuseBufvec) + (len(parts) - 1) * ctypes.sizeof(FuseBuf)
    vec_ptr = libc.malloc(size)
    if not vec_ptr:
        raise MemoryError("malloc failed")
    vec = FuseBufvec.from_address(vec_ptr)
    vec.count, vec.idx, vec.off = len(parts), 0, 0
    first = vec_ptr + FuseBufvec.buf.offset  # buf[1] follows buf[0] in the same block
    bufs = [FuseBuf.from_address(first + i * ctypes.sizeof(FuseBuf)) for i in range(len(parts))]
    for i, (buf, part) in enumerate(zip(bufs, parts, strict=True)):
        if isinstance(part, bytes):
            mem = libc.malloc(max(1, len(part)))
            if not mem:
                for earlier, made in zip(parts[:i], bufs[:i], strict=True):
                    if isinstance(earlier, bytes):
                        libc.free(made.mem)
                libc.free(vec_ptr)
                raise MemoryError("malloc failed")
            ctypes.memmove(mem, part, len(part))
            buf.size, buf.flags, buf.mem, buf.fd, buf.pos = len(part), 0, mem, -1, 0
        else:
            buf.size, buf.flags = part[0], FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
            buf.mem, buf.fd, buf.pos = None, fd, part[1]
    return int(vec_ptr)
