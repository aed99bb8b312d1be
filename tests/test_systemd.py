"""The shipped systemd units: offline verification, a security score, FUSE-specific rules."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dicomfs.commands.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
INSTALLED_BINARY = "/usr/local/bin/dicomfs"
# The mounting unit scores 6.7 with systemd 252: everything that would lower
# it further needs a mount namespace (the host would not see the mount) or
# implies NoNewPrivileges (the setuid fusermount3 would not mount); see the
# unit's header. 7.0 leaves no room to drop what it keeps: without the
# capability bounding set, device policy, IP deny list and umask the same unit
# scores 9.2 (checked below). systemd-analyze takes the threshold in tenths.
EXPOSURE_THRESHOLD = 70
# Options that put the service in its own mount namespace (systemd
# exec_needs_mount_namespace()) or, without CAP_SYS_ADMIN, imply NoNewPrivileges.
FORBIDDEN_FOR_MOUNTING_UNIT = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
    "PrivateNetwork", "PrivateIPC", "PrivateUsers", "ReadOnlyPaths", "ReadWritePaths",
    "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem", "BindPaths",
    "BindReadOnlyPaths", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectProc", "ProcSubset", "MountFlags", "RootDirectory",
    "RootImage", "DynamicUser", "NoNewPrivileges", "SystemCallFilter",
    "SystemCallArchitectures", "RestrictAddressFamilies", "RestrictNamespaces",
    "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute",
    "ProtectClock", "ProtectHostname",
}  # fmt: skip


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    return found


def directives(unit: Path, section: str = "Service") -> list[tuple[str, str]]:
    current, found = "", []
    for line in unit.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
        elif current == section and stripped and not stripped.startswith(("#", ";")):
            key, _, value = stripped.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def installed_copy(unit: Path, dest: Path) -> Path:
    """The unit as installed, but running the dicomfs of this checkout's environment."""
    binary = Path(sys.executable).with_name("dicomfs")
    assert binary.is_file(), f"{binary} missing: install the package into the venv"
    copy = dest / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_BINARY, str(binary)))
    return copy


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def exposure(unit: Path) -> tuple[float, int]:
    """(overall exposure, exit status) of ``systemd-analyze security`` at our threshold."""
    done = run(
        systemd_analyze(), "security", "--offline=yes", f"--threshold={EXPOSURE_THRESHOLD}",
        "--no-pager", str(unit),
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert match is not None, done.stdout[-2000:] + done.stderr
    return float(match.group(1)), done.returncode


def test_units_exist() -> None:
    assert [u.name for u in UNITS] == ["dicomfs-mount.service", "dicomfs.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    done = run(systemd_analyze(), "verify", "--man=no", str(installed_copy(unit, tmp_path)))
    assert done.returncode == 0, done.stderr
    assert unit.name not in done.stderr, done.stderr  # no warnings about our unit


@pytest.mark.skipif(os.path.exists(INSTALLED_BINARY), reason="dicomfs is installed here")
def test_verify_checks_the_exec_start_binary() -> None:
    """The rewrite above is needed: verify really looks at ExecStart."""
    done = run(systemd_analyze(), "verify", "--man=no", str(SYSTEMD / "dicomfs.service"))
    assert done.returncode != 0
    assert INSTALLED_BINARY in done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_security_exposure_within_threshold(unit: Path, tmp_path: Path) -> None:
    score, status = exposure(installed_copy(unit, tmp_path))
    assert score * 10 <= EXPOSURE_THRESHOLD and status == 0, score


def test_threshold_catches_dropped_hardening(tmp_path: Path) -> None:
    kept = ("CapabilityBoundingSet", "DevicePolicy", "DeviceAllow", "IPAddressDeny", "UMask")
    copy = installed_copy(SYSTEMD / "dicomfs.service", tmp_path)
    copy.write_text(
        "\n".join(line for line in copy.read_text().splitlines() if not line.startswith(kept))
    )
    score, status = exposure(copy)
    assert score * 10 > EXPOSURE_THRESHOLD and status != 0, score


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_mounting_unit_keeps_the_mount_visible_and_fusermount_working(unit: Path) -> None:
    keys = {key for key, _ in directives(unit)}
    assert not keys & FORBIDDEN_FOR_MOUNTING_UNIT


def test_notify_watchdog_restart() -> None:
    found = dict(directives(SYSTEMD / "dicomfs.service"))
    assert found["Type"] == "notify"
    assert found["NotifyAccess"] == "main"
    assert found["Restart"] == "on-failure"
    assert int(found["WatchdogSec"]) >= 10


def test_capabilities_let_the_daemon_open_sources_as_the_reader() -> None:
    found = dict(directives(SYSTEMD / "dicomfs.service"))
    bounding = set(found["CapabilityBoundingSet"].split())
    assert "CAP_SYS_ADMIN" in bounding  # for setuid fusermount3
    # allow_other opens sources with the reader's credentials (fuse/caller.py)
    assert set(found["AmbientCapabilities"].split()) == {"CAP_SETUID", "CAP_SETGID"}
    assert bounding == {"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"}  # nothing more


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_stale_mount_is_cleared_before_start(unit: Path) -> None:
    pre = [v for k, v in directives(unit) if k == "ExecStartPre"]
    assert pre[0].startswith("-") and "fusermount3 -u -z ${DICOMFS_MOUNTPOINT}" in pre[0]
    env = [v for k, v in directives(unit) if k == "Environment"]
    assert any(v.startswith("DICOMFS_MOUNTPOINT=/") for v in env)


def test_exec_start_is_a_valid_dicomfs_command() -> None:
    (start,) = [v for k, v in directives(SYSTEMD / "dicomfs.service") if k == "ExecStart"]
    argv = shlex.split(start)
    assert argv[0] == INSTALLED_BINARY
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == "/etc/dicomfs/dicomfs.toml"


def test_the_mount_host_unit_mounts_a_database_index_read_only() -> None:
    """dicomfs-mount.service: `dicomfs mount` of a PostgreSQL URL, with a role of its own
    and the network opened to one address only."""
    found = directives(SYSTEMD / "dicomfs-mount.service")
    (start,) = [v for k, v in found if k == "ExecStart"]
    argv = shlex.split(start)
    assert argv[0] == INSTALLED_BINARY
    assert build_parser().parse_args(argv[1:]).command == "mount"
    env = dict(v.split("=", 1) for k, v in found if k == "Environment")
    assert env["DICOMFS_INDEX"].startswith("postgresql://dicomfs_mount@")
    assert "PGPASSFILE" in env and "DICOMFS_ROOTS" in env
    keys = dict(found)
    assert keys["IPAddressDeny"] == "any" and keys["IPAddressAllow"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_every_service_directive_is_explained(unit: Path) -> None:
    """borgmatic-style: each group of directives follows a comment saying why."""
    previous = ""
    section = ""
    for number, line in enumerate(unit.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[Service]" and stripped and not stripped.startswith("#"):
            assert previous.startswith("#") or (previous and "=" in previous), (
                f"{unit.name}:{number}: {stripped} has no comment above it"
            )
        previous = stripped


# -- the smbd drop-in: the SMB share only while the mount is live ---------------------------------

DROP_IN = SYSTEMD / "smbd.service.d" / "dicomfs.conf"
DEBIAN_SMBD = Path("/lib/systemd/system/smbd.service")
# Where Debian's samba package is not installed, a unit of the same kind stands in.
SMBD_STAND_IN = """[Unit]
Description=stand-in for Debian's smbd.service
[Service]
Type=notify
ExecStart=/bin/true
"""


def smbd_with_drop_in(dest: Path, *, with_dicomfs: bool = True, extra: str = "") -> Path:
    """smbd.service, the shipped drop-in (plus ``extra`` lines) and dicomfs.service in ``dest``."""
    unit = dest / "smbd.service"
    if DEBIAN_SMBD.exists():
        shutil.copy(DEBIAN_SMBD, unit)
    else:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DEBIAN_SMBD} is missing (Debian package samba)")
        unit.write_text(SMBD_STAND_IN)
    (dest / "smbd.service.d").mkdir()
    (dest / "smbd.service.d" / DROP_IN.name).write_text(DROP_IN.read_text() + extra)
    if with_dicomfs:
        installed_copy(SYSTEMD / "dicomfs.service", dest)
    return unit


def test_smbd_drop_in_verifies(tmp_path: Path) -> None:
    done = run(systemd_analyze(), "verify", "--man=no", str(smbd_with_drop_in(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert DROP_IN.name not in done.stderr and "dicomfs" not in done.stderr, done.stderr


def test_verify_reads_the_drop_in_and_its_dependency(tmp_path: Path) -> None:
    """The check above means something: verify loads the drop-in and follows BindsTo=."""
    (tmp_path / "a").mkdir()
    bad = smbd_with_drop_in(tmp_path / "a", extra="NoSuchDirective=1\n")
    done = run(systemd_analyze(), "verify", "--man=no", str(bad))
    assert f"{DROP_IN.name}" in done.stderr and "NoSuchDirective" in done.stderr, done.stderr
    (tmp_path / "b").mkdir()
    alone = smbd_with_drop_in(tmp_path / "b", with_dicomfs=False)
    done = run(systemd_analyze(), "verify", "--man=no", str(alone))
    assert done.returncode != 0 and "dicomfs.service not found" in done.stderr, done.stderr


def test_smbd_drop_in_binds_smbd_to_the_live_mount() -> None:
    found = directives(DROP_IN, "Unit")
    assert found == [("BindsTo", "dicomfs.service"), ("After", "dicomfs.service")]
    assert not directives(DROP_IN, "Service") and not directives(DROP_IN, "Install")
    # After= waits for READY=1, which dicomfs sends only once the mount answers.
    assert dict(directives(SYSTEMD / "dicomfs.service"))["Type"] == "notify"
    previous = ""
    for line in DROP_IN.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            assert previous.startswith("#"), f"{line} has no comment above it"
        previous = line
