"""Patient data never leaves the index (reliability.md I1, I2).

Files carry canaries (unique strings) as PatientName and PatientID, and each
is odd enough to make the parser or pydicom complain: invalid UTF-8 under
ISO_IR 192, a VR mismatch, a malformed sequence, a truncation, a wrong VR on
the PatientID itself, an unknown character set, a conflicting duplicate.
The canaries must not appear in any path of a mount with ``names = "uid"``,
in the logs of ``dicomfs -v -v index`` and ``dicomfs -v -v serve``, or in
rejected.txt, status.json and the CLI's status/rejected output. With
``names = "id"`` the PatientID appears under ``patients/`` only and the name
nowhere; with ``"name"`` the name too, under ``patients/`` only: what paths
carry is the setting, nothing else. The index file itself holds patient IDs
and is created 0600.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from fuse_helpers import public_dir, wait_for
from rel_helpers import dicomfs, serving

from dicomfs.demo import ct_bytes
from dicomfs.index import IndexReader
from dicomfs.view.nodes import DirNode
from dicomfs.view.tree import View

NAME = "CanaryNameQx7Zeta"
PATIENT_ID = "CANARYID9c1eW"
CANARIES = (NAME, PATIENT_ID, NAME.lower(), PATIENT_ID.lower())
PREFIX = "1.2.826.0.1.3680043.10.543.66"


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def write_canary_files(src: Path) -> dict[str, str]:
    """name -> what makes it odd; every file names the canaries as its patient."""
    src.mkdir(parents=True)
    study, series = f"{PREFIX}.1", f"{PREFIX}.1.1"

    def ct(n: int, **kwargs: object) -> bytes:
        return ct_bytes(f"{PREFIX}.2.{n}", study_uid=study, series_uid=series,
                        patient_id=PATIENT_ID, patient_name=f"{NAME}^Test", **kwargs)  # type: ignore[arg-type]  # fmt: skip

    made: dict[str, str] = {}

    def put(name: str, data: bytes, why: str) -> None:
        (src / name).write_bytes(data)
        made[name] = why

    put("plain.dcm", ct(1), "valid")
    valid = ct(2)
    put("truncated.dcm", valid[: len(valid) - 300], "truncated inside the pixel data")
    name_at = valid.index(NAME.encode())
    put("cut-in-name.dcm", valid[: name_at + 5], "truncated inside PatientName")

    def bad_utf8(ds: object) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"  # type: ignore[attr-defined]
        ds.PatientName = NAME.encode() + b"\xc3\x28^\xff"  # type: ignore[attr-defined]

    put("bad-utf8.dcm", ct(3, edit=bad_utf8), "invalid UTF-8 under ISO_IR 192")

    def odd_charset(ds: object) -> None:
        ds.SpecificCharacterSet = f"ISO_IR {PATIENT_ID}"  # type: ignore[attr-defined]

    put("odd-charset.dcm", ct(4, edit=odd_charset), "unknown character set (a canary!)")

    # The dataset says explicit VR, the bytes are implicit: flagged vr_mismatch.
    template = ct(5)
    meta_end = 132 + 12 + struct.unpack_from("<I", template, 140)[0]
    implicit = b""
    for tag, value in (
        (0x00080016, b"1.2.840.10008.5.1.4.1.1.2\x00"),
        (0x00080018, f"{PREFIX}.2.5".encode()),
        (0x00080060, b"CT"),
        (0x00100010, f"{NAME}^Implicit".encode()),
        (0x00100020, PATIENT_ID.encode()),
        (0x0020000D, study.encode()),
        (0x0020000E, series.encode()),
    ):
        value += b"\x00" if len(value) % 2 else b""
        implicit += struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    put("vr-mismatch.dcm", template[:meta_end] + implicit, "implicit VR labelled explicit")

    # PatientID with a wrong VR (UI), and a reference sequence whose item is broken.
    item = _element(0x00081150, b"UI", b"1.2.840.10008.5.1.4.1.1.2") + b"\x08\x00\x55\x11ZZ"
    sequence = _element(0x00081199, b"SQ", b"\xfe\xff\x00\xe0" + struct.pack("<I", 0xFFFF) + item)
    body = (
        _element(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.2")
        + _element(0x00080018, b"UI", f"{PREFIX}.2.6".encode())
        + _element(0x00080060, b"CS", b"CT")
        + sequence
        + _element(0x00100010, b"PN", f"{NAME}^Broken".encode())
        + _element(0x00100020, b"UI", PATIENT_ID.encode())
        + _element(0x0020000D, b"UI", study.encode())
        + _element(0x0020000E, b"UI", series.encode())
    )
    put("malformed-sequence.dcm", template[:meta_end] + body, "malformed sequence, PatientID as UI")
    put("conflict.dcm", ct(1, series_description="edited"), "same SOP UID, other bytes")
    # Enough files for a process pool (64+): the workers' stderr is the daemon's log.
    (src / "bulk").mkdir()
    for n in range(100, 170):
        edit = bad_utf8 if n % 2 else odd_charset
        put(f"bulk/{n}.dcm", ct(n, edit=edit), "odd, parsed in a worker process")
    return made


def _all_paths(index: Path, names: str) -> list[str]:
    """Every path of the view of ``index`` under the names setting ``names``."""
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, names=names)
    found: list[str] = []
    try:
        pending = [""]
        while pending:
            folder = pending.pop()
            for name, node in view.listdir(folder):
                path = f"{folder}/{name}" if folder else name
                found.append(path)
                if isinstance(node, DirNode) and path.count("/") < 6:
                    pending.append(path)
    finally:
        view.close()
    return found


def assert_no_canary(text: str | bytes, where: str) -> None:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for canary in CANARIES:
        assert canary not in data, f"{canary!r} leaked into {where}"


@pytest.mark.fuse
@pytest.mark.watch
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, while the test writes its files
def test_canaries_never_reach_paths_logs_or_reports() -> None:
    base = public_dir("dicomfs-rel-phi-")
    try:
        made = write_canary_files(base / "src")
        cli_index = base / "cli.sqlite"
        done = dicomfs("-v", "-v", "index", base / "src", "--index", cli_index, "--workers", "2")
        assert done.returncode == 0, done.stderr
        assert b"DEBUG" in done.stderr or b"INFO" in done.stderr  # the logs were on
        assert_no_canary(done.stdout + done.stderr, "the log of dicomfs -v -v index")
        assert os.stat(cli_index).st_mode & 0o777 == 0o600  # I2
        for command in (("rejected",), ("status",), ("status", "--json"), ("rejected", "--json")):
            out = dicomfs("-v", "-v", *command, "--index", cli_index)
            assert out.returncode == 0, out.stderr
            assert_no_canary(out.stdout + out.stderr, f"dicomfs {' '.join(command)}")
        rejected = dicomfs("rejected", "--index", cli_index).stdout.decode()
        assert "truncated.dcm" in rejected and "cut-in-name.dcm" in rejected
        for names, shown in (("uid", ()), ("id", (PATIENT_ID,)), ("name", (PATIENT_ID, NAME))):
            paths = _all_paths(cli_index, names)
            assert len(paths) > 20
            for canary in CANARIES:
                carried = [p for p in paths if canary in p]
                if canary in shown:  # the setting's own: under patients/ only
                    assert carried and all(p.startswith("patients/") for p in carried), names
                else:
                    assert not carried, f"{canary!r} in a path with names = {names!r}"

        index = base / "serve.sqlite"
        with serving([base / "src"], base / "mnt", index, "--names", "uid") as serve:
            serve.wait_idle_indexed(len(made) - 3)  # two truncated, one conflicting copy
            listing = subprocess.run(["find", str(serve.mnt)], capture_output=True, timeout=60)
            assert listing.returncode == 0, listing.stderr
            assert listing.stdout.count(b"\n") > 20
            assert_no_canary(listing.stdout, "a path of the mount")
            for name in ("rejected.txt", "status.json"):
                assert_no_canary((serve.mnt / ".dicomfs" / name).read_bytes(), name)
            # A late arrival, parsed by the live path.
            shutil.copy(base / "src" / "odd-charset.dcm", base / "src" / "late.dcm")
            wait_for(lambda: serve.status()["files"] == len(made) + 1, 30, "the late file")
            assert serve.terminate() == 0
        assert os.stat(index).st_mode & 0o777 == 0o600
        log = serve.log()
        assert "DEBUG" in log and "reconcile" in log
        assert_no_canary(log, "the log of dicomfs -v -v serve")
    finally:
        shutil.rmtree(base, ignore_errors=True)
