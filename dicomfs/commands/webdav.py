"""The WebDAV share's commands: ``webdav`` serves the view, ``webdav-passwd`` adds users."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dicomfs.commands.common import SubParsers, add_index_option, command, index_path
from dicomfs.commands.local import PART10_HELP
from dicomfs.errors import EXIT_OK
from dicomfs.index import IndexReader
from dicomfs.view.paths import NAMES


def register(sub: SubParsers) -> None:
    """Add webdav and webdav-passwd to the main parser."""
    from dicomfs.share.defaults import DEFAULT_BIND, DEFAULT_PORT, DEFAULT_RUN_AS

    p = command(sub, "webdav", cmd_webdav, "serve the view read-only over WebDAV (no FUSE needed)")
    add_index_option(p)
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="ADDR",
        help=f"address to listen on (default {DEFAULT_BIND}); any other than loopback "
        "needs --users and --tls-cert/--tls-key",
    )
    p.add_argument(
        "--run-as",
        metavar="USER",
        help=f"without --users: the Unix user every source is opened as (default {DEFAULT_RUN_AS})",
    )
    p.add_argument(
        "--users",
        type=Path,
        metavar="FILE",
        help="httpuser:unixuser:hash lines (dicomfs webdav-passwd); HTTP Basic, each user "
        "reads as their Unix user",
    )
    p.add_argument(
        "--names",
        choices=NAMES,
        default="uid",
        help="what paths may show (README 'Names in paths'); default uid: a share is for "
        "other users; with id or name each user sees only the patients they may read",
    )
    p.add_argument("--part10", action="store_true", help=PART10_HELP)
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")

    p = command(
        sub,
        "webdav-passwd",
        cmd_webdav_passwd,
        "print a line for the WebDAV users file (the password is asked, or read from stdin)",
    )
    p.add_argument("http_user", metavar="HTTPUSER", help="the name given to the WebDAV client")
    p.add_argument("unix_user", metavar="UNIXUSER", help="the Unix user whose rights reads get")


def cmd_webdav(args: argparse.Namespace) -> int:
    from dicomfs.share.webdav import WebDavOptions, WebDavServer, run_webdav
    from dicomfs.view.tree import View

    path = index_path(args)
    IndexReader(path).close()  # fail early and clearly when there is no index
    options = WebDavOptions(
        port=args.port,
        bind=args.bind,
        run_as=args.run_as,
        users_file=args.users,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    view = View(
        lambda: IndexReader(path),
        dir_uid=os.geteuid(),
        dir_gid=os.getegid(),
        mount_time_ns=time.time_ns(),
        names=args.names,
        part10=args.part10,
    )

    def ready(server: WebDavServer) -> None:
        print(f"serving {path} read-only at {server.url} ({server.access.summary}); Ctrl-C stops")
        sys.stdout.flush()

    try:
        return run_webdav(view, options, on_ready=ready)
    finally:
        view.close()


def cmd_webdav_passwd(args: argparse.Namespace) -> int:
    from dicomfs.share.webdav_users import ask_password, users_line

    print(users_line(args.http_user, args.unix_user, ask_password()))
    return EXIT_OK
