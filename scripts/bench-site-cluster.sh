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
echo "building the release binary..." >&2
cargo build --release -p atoll -j2 >&2
BIN="$PWD/target/release/atoll"
echo "release binary: $(stat -c %s "$BIN") bytes"
ATOLL_BENCH_BIN="$BIN" cargo test -p atoll --test site_failover -- \
  --ignored --exact failover_figures --nocapture 2>&1 |
  grep -E '^(failover|host|kill) |test result'
