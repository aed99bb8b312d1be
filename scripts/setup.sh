#!/usr/bin/env bash
# Install what dicomfs needs on Debian 12, idempotently:
#  - system packages: fuse3 + libfuse3-3 (the mount), python3-venv (the venv),
#    and with --test: dcmtk (dcmdump/storescu/dcmmkdir in tests), dicom3tools
#    (dciodvfy checks exported media in tests), orthanc (a real PACS peer
#    for the fetch tests), plastimatch (reads plan packages through the mount in
#    tests), systemd (systemd-analyze), samba + smbclient + cifs-utils (the SMB
#    share tests start their own smbd; the packaged services are disabled),
#    iproute2 (ss, in the SMB tests),
#    procps/util-linux (kill, runuser), passwd (useradd for the permission tests),
#    acl (setfacl: the ACL tests),
#    curl and openssl (a WebDAV client and self-signed certificates in tests),
#    graphviz (dot: the tests draw `dicomfs graph` as SVG and PNG; optional at
#    run time, where only --format svg/png needs it), postgresql (the tests
#    start private clusters with its initdb and pg_ctl; the packaged cluster
#    is stopped and its service disabled; dicomfs itself needs only a server
#    somewhere, reached with psycopg, which brings its own libpq);
#  - a virtual environment in .venv with dicomfs installed in editable mode
#    (with --test: pytest, hypothesis, ruff, mypy, webdav4);
#  - with --test, .venv-dicompyler: dicompyler-core 0.5.6 with pydicom 2.4, since
#    its last release does not import under pydicom 3 (the tests run it there
#    against files read through the mount);
#  - with --test, .venv-rtutils: rt-utils 1.2.7 (the part10 tests open a real
#    structure set through the mount with it), apart because it pins the
#    `dataclasses` backport.
# Re-running does nothing when everything is present.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

packages=(fuse3 libfuse3-3 python3-venv ca-certificates)
[ $with_test = 1 ] && packages+=(dcmtk dicom3tools orthanc plastimatch systemd procps util-linux
                                  passwd samba smbclient cifs-utils iproute2 curl openssl acl
                                  graphviz postgresql)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Tests start their own Orthanc on loopback; the packaged service must not run.
  if printf '%s\n' "${missing[@]}" | grep -qx orthanc; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
    pkill -x Orthanc >/dev/null 2>&1 || true
  fi
  # Tests start their own smbd on a free loopback port; the packaged Samba
  # services must neither run nor start at boot (disable and stop apart:
  # without systemd as init, --now would fail before disabling).
  if printf '%s\n' "${missing[@]}" | grep -qx samba; then
    for unit in smbd nmbd samba-ad-dc; do
      systemctl disable "$unit" >/dev/null 2>&1 || true
      systemctl stop "$unit" >/dev/null 2>&1 || true
    done
    for pidfile in /run/samba/smbd.pid /run/samba/nmbd.pid /run/samba/samba.pid; do
      if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" >/dev/null 2>&1 || true; fi
    done
  fi
  # Tests start private PostgreSQL clusters on sockets of their own; the
  # packaged cluster (made and started by the package) must not run.
  if printf '%s\n' "${missing[@]}" | grep -qx postgresql; then
    systemctl disable postgresql >/dev/null 2>&1 || true
    systemctl stop postgresql >/dev/null 2>&1 || true
    for conf in /etc/postgresql/*/*/postgresql.conf; do
      [ -f "$conf" ] || continue
      cluster="$(dirname "$conf")"
      pg_ctlcluster "$(basename "$(dirname "$cluster")")" "$(basename "$cluster")" stop \
        >/dev/null 2>&1 || true
    done
  fi
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "setup: dicomfs needs Python 3.11 or newer (Debian 12: apt-get install python3)" >&2
  exit 1
fi

if [ $with_test = 1 ] && ! "$here/.venv-dicompyler/bin/python" -c "import dicompylercore.dvhcalc" 2>/dev/null; then
  "$python" -m venv "$here/.venv-dicompyler"
  "$here/.venv-dicompyler/bin/python" -m pip install -q "dicompyler-core==0.5.6" "pydicom>=2.4,<3"
fi

# rt-utils reads files through the mount in the part10 tests; it pins the old
# `dataclasses` backport, which would shadow the standard library in .venv.
if [ $with_test = 1 ] && ! "$here/.venv-rtutils/bin/python" -c "import rt_utils" 2>/dev/null; then
  "$python" -m venv "$here/.venv-rtutils"
  "$here/.venv-rtutils/bin/python" -m pip install -q "rt-utils==1.2.7" "pydicom>=3"
fi

venv="$here/.venv"
stamp="$venv/.dicomfs-installed"
hash="$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
# The stamp records the pyproject it installed and whether test tools came too.
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ]; then
  have="$(cat "$stamp")"
  if [ "$have" = "$hash-1" ] || { [ $with_test = 0 ] && [ "$have" = "$hash-0" ]; }; then
    exit 0
  fi
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
if [ $with_test = 1 ]; then
  "$venv/bin/python" -m pip install -q -e "$here[test]"
else
  "$venv/bin/python" -m pip install -q -e "$here"
fi
echo "$hash-$with_test" > "$stamp"
echo "setup: dicomfs installed in $venv" >&2
