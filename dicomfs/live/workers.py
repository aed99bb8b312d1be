"""Parse worker processes that never outlive the process that started them.

After ``kill -9`` of ``dicomfs index`` or ``serve`` nothing runs the pool's
shutdown: forked workers would be adopted by init and keep parsing (and keep
the parent's descriptors, the index among them) for as long as their queue
lasts, and a forkserver's workers likewise (reliability.md A12). Each worker
therefore asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``, prctl(2)); a forkserver ends by itself when the
process that started it is gone (its "alive" pipe closes), so its workers
follow. A parent that died before the request took effect is caught by
checking that the starting process is still there.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(starter_pid: int) -> None:
    """Pool initializer: SIGKILL when the parent goes; exit now if the starter is gone."""
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    try:
        os.kill(starter_pid, 0)  # signal 0: only "does it exist"
    except ProcessLookupError:
        os._exit(0)
    except PermissionError:
        pass  # it exists, under another user
