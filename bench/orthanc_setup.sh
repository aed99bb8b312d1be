#!/usr/bin/env bash
# Set-up step of bench/peer_orthanc.py (Debian 12, as root), idempotent:
#  - installs Debian's orthanc (the peer) and dcmtk (storescu, the DICOM sender),
#    plus util-linux (unshare: Orthanc runs in a network namespace with loopback only);
#  - never leaves the packaged Orthanc service running: its start is blocked during
#    the install (policy-rc.d), and a daemon already started from /etc/orthanc is
#    stopped through its pid file. The benchmark starts its own Orthanc with a
#    generated configuration and stops it at the end.
# The product never needs any of this: it is for the side-by-side benchmark only.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "orthanc_setup: run as root (apt-get install orthanc dcmtk util-linux)" >&2
  exit 1
fi

packages=(orthanc dcmtk util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [ ! -e "$policy" ]; then
    # Debian's documented switch: "exit 101" forbids invoke-rc.d to start services.
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  trap 'if [ $added_policy = 1 ]; then rm -f "$policy"; fi' EXIT
  echo "orthanc_setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# A system Orthanc (started by an earlier install or by hand through the init
# script) would hold ports and CPU during the benchmark: stop exactly that one.
pidfile=/run/orthanc.pid
if [ -s "$pidfile" ]; then
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = /usr/sbin/Orthanc ]; then
    echo "orthanc_setup: stopping the system Orthanc daemon (pid $pid)" >&2
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
fi

for tool in Orthanc storescu unshare; do
  command -v "$tool" >/dev/null || { echo "orthanc_setup: $tool is missing" >&2; exit 1; }
done
echo "orthanc_setup: $(Orthanc --version 2>/dev/null | head -n1), $(storescu --version | head -n1)" >&2
