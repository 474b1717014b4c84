#!/usr/bin/env bash
# Benchmarks the site cluster with the release binary on three hosts of one site, each in its
# own network namespace with its own Docker Engine (the fixture of crates/atoll/tests/site_lan.rs;
# needs root, ip, nsenter, dockerd):
#   - the failover time, median and max over ten kills of a host running a replica (agent,
#     engine and containers killed at once), on the default timers;
#   - each agent's idle memory (VmRSS) in the three-host site, after 30 s idle;
#   - the release binary's size.
#
#   scripts/bench-site-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building the release binary and the benchmark..." >&2
cargo bench -p atoll --bench site_cluster --no-run -j2 >&2
echo "release binary: $(stat -c %s target/release/atoll) bytes"
cargo bench -p atoll --bench site_cluster 2>&1 | grep -E '^(failover|host|kill) '
