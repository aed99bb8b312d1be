"""The WebDAV share as clients see it: a real ``dicomfs webdav`` on loopback, curl and webdav4.

Every server is a real process started by the test on a free loopback port
(``webdav_helpers.Share``); requests are made with curl (exact bytes on the
wire, hostile paths sent as given) and with the webdav4 client library. The
rule under test throughout: the share answers what the view holds, never
changes anything, and serves no byte the reader could not read from the
source directly. A server that cannot start fails its test, never skips.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import index_folders
from fuse_helpers import ensure_group, ensure_user, mounted, public_dir, wait_for
from webdav4.client import Client
from webdav_helpers import (
    Reply,
    Share,
    child_names,
    curl,
    dav_entries,
    dicomfs_as,
    free_port,
    snapshot,
    write_ct_copies,
)

from dicomfs.index import IndexReader
from dicomfs.share.webdav_users import check_password, hash_password
from dicomfs.view.nodes import DirNode, FileNode
from dicomfs.view.tree import View

GROUP = "dicomfs-dav-readers"
INSIDER = "dicomfs-dav-in"  # in GROUP
OUTSIDER = "dicomfs-dav-out"
PROPFIND_NAMED = (
    '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:X="urn:x"><D:prop>'
    "<D:getcontentlength/><D:getetag/><X:colour/></D:prop></D:propfind>"
)


def view_of(index: Path) -> View:
    return View(
        lambda: IndexReader(index),
        dir_uid=0,
        dir_gid=0,
        mount_time_ns=time.time_ns(),
        names="id",  # as the share below: the patients/ tree is served too
    )


def index_tree(root: Path, index: Path) -> Path:
    index_folders(index, [root], 1)
    return index


def propfind(url: str, depth: str | None, *args: str) -> Reply:
    headers = ["-H", f"Depth: {depth}"] if depth is not None else []
    return curl(url, "-X", "PROPFIND", *headers, *args)


@pytest.fixture(scope="module")
def share(demo_index: Path) -> Iterator[Share]:
    """The demo data, read as root (pytest's folders are closed to other users)."""
    with Share(demo_index, "--run-as", "root", "--names", "id") as running:
        yield running


@pytest.fixture(scope="module")
def view(demo_index: Path) -> Iterator[View]:
    v = view_of(demo_index)
    yield v
    v.close()


# -- PROPFIND ---------------------------------------------------------------------------


def test_propfind_depth_0_and_1_list_exactly_what_the_view_lists(
    share: Share, view: View, demo_set
) -> None:  # type: ignore[no-untyped-def]
    plan = demo_set.patients[0].plan_uid
    folder = f"/plans/{plan}/references/"
    one = propfind(share.url + folder, "0")
    assert one.status == 207 and one.headers["content-type"].startswith("application/xml")
    assert list(dav_entries(one.body)) == [folder]
    assert dav_entries(one.body)[folder]["resourcetype"] == "collection"
    listed = propfind(share.url + folder, "1")
    assert listed.status == 207
    expected = view.listdir(folder)
    assert child_names(folder, listed.body) == [name for name, _ in expected]
    entries = dav_entries(listed.body)
    for name, node in expected:
        assert isinstance(node, FileNode)
        props = entries[folder + name]
        assert props["displayname"] == name and props["resourcetype"] == ""
        assert int(props["getcontentlength"]) == node.size
        assert props["getcontenttype"] == "application/dicom"
        when = parsedate_to_datetime(props["getlastmodified"]).timestamp()
        assert when == node.mtime_ns // 1_000_000_000
        head = curl(share.url + folder + name, "-I")
        assert head.status == 200 and head.headers["etag"] == props["getetag"]
    # The root lists the view's top folders, each a collection.
    root = propfind(share.url + "/", "1")
    assert child_names("/", root.body) == [name for name, _ in view.listdir("/")]


def test_propfind_of_infinite_depth_is_refused(share: Share) -> None:
    refused = propfind(share.url + "/by-sop/", "infinity")
    assert refused.status == 403
    assert b"propfind-finite-depth" in refused.body
    assert propfind(share.url + "/", "Infinity").status == 403
    assert propfind(share.url + "/", "2").status == 400
    # No Depth header at all: answered as Depth 1 (clients ask one resource so).
    plain = propfind(share.url + "/.dicomfs/", None)
    assert plain.status == 207
    assert child_names("/.dicomfs/", plain.body) == ["plans.tsv", "rejected.txt", "status.json"]
    assert propfind(share.url + "/no-such-folder/", "1").status == 404


def test_propfind_named_properties_and_unknown_ones(share: Share, view: View) -> None:
    name, node = next((n, v) for n, v in view.listdir("/by-sop") if isinstance(v, FileNode))
    reply = propfind(
        f"{share.url}/by-sop/{name}", "0", "-H", "Content-Type: application/xml",
        "--data-binary", PROPFIND_NAMED,
    )  # fmt: skip
    assert reply.status == 207
    props = dav_entries(reply.body)[f"/by-sop/{name}"]
    assert props == {"getcontentlength": str(node.size), "getetag": props["getetag"]}
    assert b"urn:x" in reply.body and b"404 Not Found" in reply.body
    names_only = propfind(
        f"{share.url}/by-sop/", "0", "--data-binary",
        '<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>',
    )  # fmt: skip
    assert names_only.status == 207 and b"<D:getlastmodified/>" in names_only.body
    bad = propfind(f"{share.url}/by-sop/", "0", "--data-binary", "<not-xml")
    assert bad.status == 400


# -- GET ------------------------------------------------------------------------------------


def test_every_file_of_a_plan_package_is_byte_exact(share: Share, view: View, demo_set) -> None:  # type: ignore[no-untyped-def]
    client = Client(share.url)
    for patient in demo_set.patients:
        plan = f"plans/{patient.plan_uid}"
        checked = 0
        for entry in client.ls(plan, detail=True):
            assert isinstance(entry, dict)
            paths = [entry["name"]]
            if entry["type"] == "directory":
                paths = [str(e["name"]) for e in client.ls(entry["name"], detail=True)]
            for path in paths:
                node = view.lookup(path)
                assert isinstance(node, FileNode)
                got = io.BytesIO()
                client.download_fileobj(path, got)
                if node.real_path is not None:
                    assert got.getvalue() == Path(node.real_path).read_bytes(), path
                else:  # manifest.json, missing.txt: as the view makes them
                    assert got.getvalue() == node.data(), path
                checked += 1
        assert checked > len(patient.ct_uids)


def test_range_requests(share: Share, view: View) -> None:
    name, node = max(
        ((n, v) for n, v in view.listdir("/by-sop") if isinstance(v, FileNode)),
        key=lambda entry: entry[1].size,
    )
    assert isinstance(node, FileNode) and node.real_path is not None
    data = Path(node.real_path).read_bytes()
    url = f"{share.url}/by-sop/{name}"
    first = curl(url, "-H", "Range: bytes=0-9")
    assert first.status == 206 and first.body == data[:10]
    assert first.headers["content-range"] == f"bytes 0-9/{len(data)}"
    tail = curl(url, "-H", "Range: bytes=-100")
    assert tail.status == 206 and tail.body == data[-100:]
    rest = curl(url, "-H", "Range: bytes=1000-")
    assert rest.status == 206 and rest.body == data[1000:]
    middle = curl(url, "-H", "Range: bytes=128-131")
    assert middle.body == b"DICM"
    beyond = curl(url, "-H", f"Range: bytes={len(data)}-")
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    tag = first.headers["etag"]
    assert curl(url, "-H", "Range: bytes=0-9", "-H", f"If-Range: {tag}").status == 206
    stale = curl(url, "-H", "Range: bytes=0-9", "-H", 'If-Range: "old"')
    assert stale.status == 200 and stale.body == data


def test_etag_last_modified_and_conditional_get(share: Share, view: View) -> None:
    name, node = next((n, v) for n, v in view.listdir("/by-sop") if isinstance(v, FileNode))
    assert isinstance(node, FileNode)
    url = f"{share.url}/by-sop/{name}"
    full = curl(url)
    assert full.status == 200 and len(full.body) == node.size
    assert full.headers["content-length"] == str(node.size)
    assert full.headers["accept-ranges"] == "bytes"
    # From the index: the source's inode, size and mtime.
    assert full.headers["etag"].strip('"').split("-")[1:] == [
        f"{node.inode:x}",
        f"{node.size:x}",
        f"{node.mtime_ns:x}",
    ]
    modified = full.headers["last-modified"]
    assert parsedate_to_datetime(modified).timestamp() == node.mtime_ns // 1_000_000_000
    again = curl(url, "-H", f"If-None-Match: {full.headers['etag']}")
    assert again.status == 304 and again.body == b""
    assert again.headers["etag"] == full.headers["etag"]
    assert curl(url, "-H", f"If-Modified-Since: {modified}").status == 304
    assert curl(url, "-H", 'If-None-Match: "other"').status == 200
    assert curl(url, "-H", 'If-Match: "other"').status == 412
    conn = http.client.HTTPConnection("127.0.0.1", share.port, timeout=30)
    try:
        conn.request("HEAD", f"/by-sop/{name}")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Content-Length") == str(node.size)
        assert head.getheader("ETag") == full.headers["etag"]
    finally:
        conn.close()
    status = curl(share.url + "/.dicomfs/status.json")
    assert status.status == 200 and json.loads(status.body)["instances"] > 0
    assert status.headers["content-type"] == "application/json"


HOSTILE = [
    "/by-sop/../../../../etc/passwd",
    "/../../../../etc/passwd",
    "/by-sop/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/by-sop%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/by-sop/..%2F..%2F..%2Fetc%2Fpasswd",
    "/by-sop/%252e%252e/etc/passwd",
    "/by-sop/..\\..\\etc\\passwd",
    "/by-sop/%00",
    "/by-sop/x%00.dcm",
    "/by-sop/./x.dcm",
    "/by-sop/caf%C3%A9.dcm",
    "/by-sop/" + "9" * 300 + ".dcm",
    "/" + "/".join(["by-sop"] * 800),
    "/etc/passwd",
]


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p[:40])
def test_hostile_paths_are_not_found(share: Share, path: str) -> None:
    for method in ("GET", "PROPFIND"):
        reply = curl(share.url + path, "-X", method, "-H", "Depth: 0")
        assert reply.status == 404, (method, path, reply.status)
        assert b"root:" not in reply.body


def test_every_write_method_is_refused_and_nothing_changes(
    share: Share, view: View, demo_set, demo_index: Path
) -> None:  # type: ignore[no-untyped-def]
    before_sources = snapshot(demo_set.root)
    before_index = demo_index.read_bytes()
    before_listing = propfind(share.url + "/by-sop/", "1").body
    name = next(n for n, v in view.listdir("/by-sop") if isinstance(v, FileNode))
    target = f"{share.url}/by-sop/{name}"
    destination = ["-H", f"Destination: {share.url}/by-sop/copy.dcm"]
    requests: list[tuple[str, str, list[str]]] = [
        ("PUT", target, ["--data-binary", "overwritten"]),
        ("PUT", share.url + "/by-sop/new.dcm", ["--data-binary", "new"]),
        ("DELETE", target, []),
        ("DELETE", share.url + "/by-sop/", []),
        ("MKCOL", share.url + "/by-sop/newfolder/", []),
        ("COPY", target, destination),
        ("MOVE", target, destination),
        ("PROPPATCH", target, ["--data-binary", '<D:propertyupdate xmlns:D="DAV:"><D:set>'
                               "<D:prop><D:displayname>x</D:displayname></D:prop></D:set>"
                               "</D:propertyupdate>"]),
        ("LOCK", target, ["--data-binary", '<D:lockinfo xmlns:D="DAV:"><D:lockscope>'
                          "<D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
                          "</D:lockinfo>"]),
        ("UNLOCK", target, ["-H", "Lock-Token: <opaquelocktoken:x>"]),
        ("POST", target, ["--data-binary", "x"]),
        ("PATCH", target, ["--data-binary", "x"]),
    ]  # fmt: skip
    for method, url, extra in requests:
        reply = curl(url, "-X", method, *extra)
        assert reply.status in (403, 405), (method, url, reply.status)
    allowed = curl(target, "-X", "OPTIONS").headers["allow"]
    assert set(allowed.replace(" ", "").split(",")) == {"OPTIONS", "HEAD", "GET", "PROPFIND"}
    assert curl(target, "-X", "OPTIONS").headers["dav"] == "1"  # no locking class
    assert snapshot(demo_set.root) == before_sources
    assert demo_index.read_bytes() == before_index
    assert propfind(share.url + "/by-sop/", "1").body == before_listing
    assert curl(share.url + "/by-sop/new.dcm").status == 404


# -- who reads ---------------------------------------------------------------------------------


@dataclass
class Tree:
    base: Path
    index: Path
    uids: dict[str, str]  # "open", "secret", "hidden", "acl" -> SOP UID
    paths: dict[str, Path]


@pytest.fixture(scope="module")
def access_tree() -> Iterator[Tree]:
    """A source tree other users may traverse: 0644, 0600, 0700-folder and ACL-denied files."""
    ensure_group(GROUP)
    ensure_user(INSIDER, (GROUP,))
    ensure_user(OUTSIDER)
    base = public_dir("dicomfs-webdav-access-")
    src = base / "src"
    made = write_ct_copies(src, 2, series=5) | write_ct_copies(
        src / "private", 1, series=5, start=2
    )
    made |= write_ct_copies(src / "acl", 1, series=5, start=3)
    (open_uid, open_path), (secret_uid, secret_path), (hidden_uid, hidden_path), acl = made.items()
    os.chmod(secret_path, 0o600)  # root's, like the other files
    os.chmod(src / "private", 0o700)
    subprocess.run(["setfacl", "-m", f"u:{INSIDER}:---", str(acl[1])], check=True)
    (src / "notes.txt").write_text("not DICOM\n")  # rejected, in a folder anyone may list
    (src / "private" / "notes.txt").write_text("not DICOM\n")  # rejected, in the 0700 folder
    index = index_tree(src, base / "index.sqlite")
    os.chmod(index, 0o644)
    yield Tree(
        base,
        index,
        {"open": open_uid, "secret": secret_uid, "hidden": hidden_uid, "acl": acl[0]},
        {"open": open_path, "secret": secret_path, "hidden": hidden_path, "acl": acl[1]},
    )
    shutil.rmtree(base, ignore_errors=True)


def read_directly(user: str, path: Path) -> bool:
    done = subprocess.run(["runuser", "-u", user, "--", "cat", str(path)], capture_output=True)
    return done.returncode == 0


def test_run_as_nobody_by_default_and_root_when_configured(access_tree: Tree) -> None:
    uids, paths = access_tree.uids, access_tree.paths
    with Share(access_tree.index) as nobody:
        opened = curl(f"{nobody.url}/by-sop/{uids['open']}.dcm")
        assert opened.status == 200 and opened.body == paths["open"].read_bytes()
        secret = curl(f"{nobody.url}/by-sop/{uids['secret']}.dcm")
        assert secret.status == 403 and secret.body != paths["secret"].read_bytes()
        assert curl(f"{nobody.url}/by-sop/{uids['hidden']}.dcm").status == 403
        assert "as Unix user nobody" in nobody.log()
        assert curl(nobody.url + "/.dicomfs/status.json").status == 200  # generated: served
        # rejected.txt names a source path only where nobody may list its folder.
        rejected = curl(nobody.url + "/.dicomfs/rejected.txt")
        assert rejected.status == 200
        lines = sorted(line.split("\t")[0] for line in rejected.body.decode().splitlines())
        assert lines == sorted(["<withheld>", str(access_tree.base / "src" / "notes.txt")])
    with Share(access_tree.index, "--run-as", "root") as root:
        secret = curl(f"{root.url}/by-sop/{uids['secret']}.dcm")
        assert secret.status == 200 and secret.body == paths["secret"].read_bytes()
        rejected = curl(root.url + "/.dicomfs/rejected.txt")
        assert str(access_tree.base / "src" / "private" / "notes.txt").encode() in rejected.body


def test_a_source_changed_since_indexing_is_refused_not_served(tmp_path: Path) -> None:
    """The open checks the source against the index (C5): 503, never the new bytes."""
    made = write_ct_copies(tmp_path / "src", 2, series=7)
    index = index_tree(tmp_path / "src", tmp_path / "index.sqlite")
    (changed_uid, changed), (swapped_uid, swapped) = made.items()
    with Share(index, "--run-as", "root") as share:
        assert curl(f"{share.url}/by-sop/{changed_uid}.dcm").status == 200
        os.utime(changed, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        reply = curl(f"{share.url}/by-sop/{changed_uid}.dcm")
        assert reply.status == 503 and reply.headers["retry-after"] == "5"
        assert not reply.body.startswith(changed.read_bytes()[:132])
        original = swapped.read_bytes()
        swapped.unlink()
        swapped.symlink_to(changed)  # a symlink swapped in: O_NOFOLLOW refuses it
        assert curl(f"{share.url}/by-sop/{swapped_uid}.dcm").status == 503
        swapped.unlink()
        swapped.write_bytes(original)
        assert "changed since it was indexed" in share.log() or "symlink" in share.log()
        assert share.stop() == 0  # SIGTERM: a clean stop


def write_users(path: Path, lines: list[tuple[str, str, str]]) -> Path:
    path.write_text("# httpuser:unixuser:hash\n" + "".join(
        f"{name}:{unix}:{hash_password(password)}\n" for name, unix, password in lines
    ))  # fmt: skip
    path.chmod(0o600)
    return path


def test_each_http_user_reads_exactly_what_their_unix_user_may(access_tree: Tree) -> None:
    """0600, a file in a 0700 folder and an ACL that denies one user: as the sources say."""
    uids, paths = access_tree.uids, access_tree.paths
    users = write_users(
        access_tree.base / "users",
        [("alice", INSIDER, "alice pw"), ("bob", OUTSIDER, "bob pw")],
    )
    with Share(access_tree.index, "--users", users) as share:
        for http_user, unix_user, password in (("alice", INSIDER, "alice pw"),
                                               ("bob", OUTSIDER, "bob pw")):  # fmt: skip
            for key in ("open", "secret", "hidden", "acl"):
                reply = curl(f"{share.url}/by-sop/{uids[key]}.dcm", "-u", f"{http_user}:{password}")
                may = read_directly(unix_user, paths[key])
                assert reply.status == (200 if may else 403), (http_user, key, reply.status)
                if may:
                    assert reply.body == paths[key].read_bytes()
        # The ACL denies alice only; bob reads that file.
        assert not read_directly(INSIDER, paths["acl"]) and read_directly(OUTSIDER, paths["acl"])
        listing = propfind(share.url + "/by-sop/", "1", "-u", "bob:bob pw")
        assert listing.status == 207 and len(child_names("/by-sop/", listing.body)) == 4
        withheld = curl(share.url + "/.dicomfs/rejected.txt", "-u", "bob:bob pw").body
        assert withheld.count(b"<withheld>") == 1 and b"src/notes.txt" in withheld
        wrong = curl(f"{share.url}/by-sop/{uids['open']}.dcm", "-u", "alice:wrong")
        assert wrong.status == 401 and wrong.body != paths["open"].read_bytes()
        assert wrong.headers["www-authenticate"].startswith('Basic realm="dicomfs"')
        assert curl(f"{share.url}/by-sop/").status == 401
        assert curl(f"{share.url}/by-sop/", "-u", "mallory:alice pw").status == 401
        assert propfind(share.url + "/", "1").status == 401
        assert "wrong password or unknown user 'alice'" in share.log()


def test_tls_with_a_users_file(access_tree: Tree, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    users = write_users(tmp_path / "users", [("carol", "root", "s3cret")])
    uid = access_tree.uids["secret"]
    args = ["--users", users, "--tls-cert", cert, "--tls-key", key]
    with Share(access_tree.index, *args, tls=True) as share:
        assert share.url.startswith("https://")
        ok = curl(f"{share.url}/by-sop/{uid}.dcm", "--cacert", cert, "-u", "carol:s3cret")
        assert ok.status == 200 and ok.body == access_tree.paths["secret"].read_bytes()
        bad = curl(f"{share.url}/by-sop/{uid}.dcm", "--cacert", cert, "-u", "carol:nope")
        assert bad.status == 401
        trust = ssl.create_default_context(cafile=str(cert))
        client = Client(share.url, auth=("carol", "s3cret"), verify=trust)
        assert f"by-sop/{uid}.dcm" in client.ls("by-sop", detail=False)
        plain = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{share.port}/"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert plain.returncode != 0  # no clear-text answer on the TLS port


def refused(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run(
        [sys.executable, "-m", "dicomfs", "webdav", "--port", str(free_port()),
         *[str(a) for a in args]],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_refusals_at_start(demo_index: Path, tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", [("dan", "root", "pw")])
    cert = tmp_path / "none.pem"
    cases = [
        (["--bind", "0.0.0.0"], "not a loopback address"),
        (["--bind", "0.0.0.0", "--users", users], "not a loopback address"),
        (["--bind", "::", "--tls-cert", cert, "--tls-key", cert], "not a loopback address"),
        (["--tls-cert", cert], "needs both a certificate"),
        (["--users", users, "--run-as", "root"], "--run-as applies without --users only"),
        (["--run-as", "dicomfs-no-such-user"], "unknown Unix user"),
        (["--users", tmp_path / "absent"], "cannot read the WebDAV users file"),
        (["--users", users, "--tls-cert", cert, "--tls-key", cert], "cannot use TLS certificate"),
    ]
    for args, message in cases:
        done = refused("--index", demo_index, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    bad = tmp_path / "bad-users"
    bad.write_text("erin:root:plaintext\n")
    done = refused("--index", demo_index, "--users", bad)
    assert done.returncode == 2 and "line 1" in done.stderr and "plaintext" not in done.stderr


def test_a_daemon_that_cannot_switch_serves_only_as_itself(access_tree: Tree) -> None:
    index = access_tree.index
    done = dicomfs_as(OUTSIDER, "webdav", "--index", index, "--port", str(free_port()),
                      "--run-as", "nobody")  # fmt: skip
    assert done.returncode == 2
    assert b"cannot take other users' credentials" in done.stderr
    uids, paths = access_tree.uids, access_tree.paths
    with Share(index, user=OUTSIDER) as share:
        assert "as the daemon's own user" in share.log()
        ok = curl(f"{share.url}/by-sop/{uids['open']}.dcm")
        assert ok.status == 200 and ok.body == paths["open"].read_bytes()
        assert curl(f"{share.url}/by-sop/{uids['secret']}.dcm").status == 403


# -- the same answers as the mount, serve, users file ----------------------------------------


@pytest.mark.fuse
def test_the_same_answers_as_the_fuse_mount_for_every_path(
    share: Share, demo_index: Path, tmp_path: Path
) -> None:
    """Every folder's listing and every file's bytes of the demo data, mount vs WebDAV."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    client = Client(share.url, timeout=60)
    folders = files = 0
    with mounted(mnt, demo_index):
        pending = [""]
        while pending:
            rel = pending.pop()
            local = sorted(os.listdir(mnt / rel) if rel else os.listdir(mnt))
            # patients/ names hold spaces and other characters a URL must quote
            remote = propfind(f"{share.url}/{quote(rel)}/" if rel else share.url + "/", "1")
            assert remote.status == 207
            assert sorted(child_names(f"/{rel}/" if rel else "/", remote.body)) == local, rel
            folders += 1
            for name in local:
                path = f"{rel}/{name}" if rel else name
                if (mnt / path).is_dir():
                    pending.append(path)
                    continue
                got = io.BytesIO()
                client.download_fileobj(path, got)
                if path == ".dicomfs/status.json":  # mount time and process differ
                    assert (
                        json.loads(got.getvalue())["instances"]
                        == json.loads((mnt / path).read_bytes())["instances"]
                    )
                else:
                    assert got.getvalue() == (mnt / path).read_bytes(), path
                files += 1
    assert folders > 50 and files > 200


def test_serve_with_a_webdav_port_and_no_mount(tmp_path: Path) -> None:
    base = public_dir("dicomfs-webdav-serve-")
    try:
        made = write_ct_copies(base / "src", 3, series=6)
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dicomfs", "serve", str(base / "src"), "--index",
                 str(tmp_path / "index.sqlite"), "--webdav-port", str(port)],
                stdout=out, stderr=out, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"

            def listed() -> bool:
                try:
                    reply = propfind(url + "/by-sop/", "1")
                except AssertionError:
                    return False  # not listening yet
                return reply.status == 207 and len(child_names("/by-sop/", reply.body)) == 3

            wait_for(lambda: (proc.poll() is None and listed()) or proc.poll() is not None, 60,
                     "serve to list the sources over WebDAV")  # fmt: skip
            assert proc.poll() is None, log.read_text()
            uid, path = next(iter(made.items()))
            reply = curl(f"{url}/by-sop/{uid}.dcm")  # as nobody: the folder is public
            assert reply.status == 200 and reply.body == path.read_bytes()
            status = json.loads(curl(url + "/.dicomfs/status.json").body)
            assert "ingest" in status  # the live index's own view
            proc.terminate()
            assert proc.wait(60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_webdav_passwd_makes_a_line_the_server_accepts(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    made = subprocess.run(
        [sys.executable, "-m", "dicomfs", "webdav-passwd", "frank", "root"],
        input="correct horse\n", capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    name, unix, encoded = made.stdout.strip().split(":")
    assert (name, unix) == ("frank", "root") and encoded.startswith("pbkdf2-sha256$600000$")
    assert check_password("correct horse", encoded) and not check_password("wrong", encoded)
    other = subprocess.run(
        [sys.executable, "-m", "dicomfs.share.webdav_users", "hash", "frank", "root"],
        input="correct horse\n", capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert other.stdout.split(":")[2] != encoded  # a new salt every time
    bad = subprocess.run(
        [sys.executable, "-m", "dicomfs", "webdav-passwd", "frank", "dicomfs-no-such-user"],
        input="pw\n", capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown Unix user" in bad.stderr


def test_serve_settings_for_webdav(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomfs.errors import ConfigError
    from dicomfs.service import config

    monkeypatch.setattr(config, "DEFAULT_CONFIG", tmp_path / "absent.toml")
    toml = tmp_path / "d.toml"
    toml.write_text(
        'webdav_port = 8443\nwebdav_bind = "127.0.0.1"\nwebdav_run_as = "dicom"\n'
        'webdav_users = "users"\nwebdav_tls_cert = "c.pem"\nwebdav_tls_key = "k.pem"\n'
    )
    s = config.resolve({"config": str(toml)}, {"DICOMFS_WEBDAV_PORT": "9000"})
    assert s.webdav_port == 9000 and s.origin("webdav_port") == "env"
    assert (s.webdav_bind, s.webdav_run_as) == ("127.0.0.1", "dicom")
    assert s.webdav_users == tmp_path / "users" and s.webdav_tls_key == tmp_path / "k.pem"
    assert config.resolve({}, {}).webdav_port is None
    assert config.resolve({}, {}).webdav_bind == "127.0.0.1"
    with pytest.raises(ConfigError, match="webdav_port"):
        config.resolve({"webdav_port": 0}, {})


def test_names_are_the_views_and_every_node_kind_is_served(view: View) -> None:
    """The gate's grammar admits every name the view lists (so nothing listed is a 404)."""
    from dicomfs.share.gate import safe_path

    pending = ["/"]
    seen = 0
    while pending:
        folder = pending.pop()
        for name, node in view.listdir(folder):
            path = folder.rstrip("/") + "/" + name
            assert safe_path(path), path
            seen += 1
            if isinstance(node, DirNode) and not path.startswith("/objects/"):
                pending.append(path)
    assert seen > 100


def test_a_rebuilding_index_answers_503_never_an_empty_listing(tmp_path: Path) -> None:
    """E6 over WebDAV: while the index is rebuilt, 503 for what needs it, never empty folders."""
    from dicomfs.index import set_aside

    made = write_ct_copies(tmp_path / "src", 2, series=8)
    index = index_tree(tmp_path / "src", tmp_path / "index.sqlite")
    uid = next(iter(made))
    with Share(index, "--run-as", "root") as share:
        assert curl(f"{share.url}/by-sop/{uid}.dcm").status == 200
        set_aside(index)  # what serve does with a damaged index: a new, marked, empty one
        for path in ("/by-sop/", f"/by-sop/{uid}.dcm"):
            assert propfind(f"{share.url}{path}", "1").status == 503, path
        assert curl(f"{share.url}/by-sop/{uid}.dcm").status == 503
        index_folders(index, [tmp_path / "src"], 1)  # the rebuild's reconcile completes ...
        wait_for(
            lambda: curl(f"{share.url}/by-sop/{uid}.dcm").status == 200, 10, "the rebuilt index"
        )
        assert share.stop() == 0
