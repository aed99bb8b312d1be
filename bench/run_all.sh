#!/usr/bin/env bash
# Every benchmark, one after another, each writing its section of BENCHMARKS.md.
# Run as root on an otherwise idle machine: ./bench/run_all.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
bash bench/orthanc_setup.sh
$py bench/index_bench.py --files 3000 --rows 512 --memory-files 100000
$py bench/mount_bench.py --files 3000 --rows 512 --series 1000 --big-listing 100000
$py bench/serve_bench.py --singles 50 --burst 2000 --rows 512
$py bench/peer_orthanc.py
$py bench/webdav_bench.py
$py bench/smb_bench.py --rounds 7
$py bench/big_object_bench.py
$py bench/access_bench.py --files 2000 --rounds 5
$py bench/human_bench.py --instances 1000000 --patients 4000 --plans 2000
$py bench/hosts_bench.py --files 100000
