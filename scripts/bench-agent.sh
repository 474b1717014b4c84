#!/usr/bin/env bash
# Benchmarks the edge agent with the real binary and the local Docker Engine:
#   - the release binary's size (the release profile strips it),
#   - the agent's idle memory (VmRSS after 30 s idle) and CPU (% of one core over 60 s idle),
#   - the median of 10 apply → running latencies: each round applies a new version of a
#     two-service application and waits until `atoll status` shows every replica running in a
#     new container (and, for reference, the first deployment's, which replaces nothing).
# Needs cargo, docker and jq. Cleans up its processes, containers and files however it ends.
#
#   scripts/bench-agent.sh            # ROUNDS=10 IDLE_RSS_AFTER=30 IDLE_CPU_OVER=60
set -euo pipefail

ROUNDS=${ROUNDS:-10}
IDLE_RSS_AFTER=${IDLE_RSS_AFTER:-30}
IDLE_CPU_OVER=${IDLE_CPU_OVER:-60}
IMAGE=atoll.local/demo:bench

cd "$(dirname "$0")/.."
for tool in cargo docker jq; do
  command -v "$tool" >/dev/null || { echo "bench-agent: $tool is required" >&2; exit 2; }
done
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
  { echo "bench-agent: Docker is unreachable (DOCKER_HOST or /var/run/docker.sock)" >&2; exit 2; }

echo "building the release binary..." >&2
cargo build --release -p atoll -j2 >&2
BIN="$PWD/target/release/atoll"

WORK=$(mktemp -d)
SITE="bench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
CP_PID=""
AGENT_PID=""
cleanup() {
  set +e
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  [ -n "$CP_PID" ] && kill "$CP_PID" 2>/dev/null && wait "$CP_PID" 2>/dev/null
  ids=$(docker ps -aq --filter "label=io.atoll.site=$SITE")
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A clean CLI environment: nothing from the user's config.
unset ATOLL_CONFIG ATOLL_URL ATOLL_TOKEN ATOLL_CA_FILE ATOLL_DATA_DIR ATOLL_LISTEN ATOLL_LOG \
  ATOLL_CONTROL ATOLL_JOIN_TOKEN ATOLL_AGENT_DATA_DIR
export HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/xdg"
mkdir -p "$HOME"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Waits up to $1 seconds for the command in the remaining arguments to succeed.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "bench-agent: timed out waiting for: $*" >&2
      return 1
    fi
    sleep 0.05
  done
}

"$BIN" demo image --tag "$IMAGE" >/dev/null

"$BIN" control --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/control.out" 2>"$WORK/control.err" &
CP_PID=$!
wait_for 30 grep -q "listening on" "$WORK/control.out"
URL=$(sed -n 's/^atoll control plane listening on //p' "$WORK/control.out")
export ATOLL_URL="$URL" ATOLL_TOKEN="$(cat "$WORK/data/initial-admin-token")" \
  ATOLL_CA_FILE="$WORK/data/ca.pem" ATOLL_CONFIG="$WORK/cli.json"

cat >"$WORK/site.yaml" <<EOF
kind: Site
name: $SITE
labels: { bench: "$SITE", store_id: "0042" }
variables: { greeting: Hello from $SITE }
EOF
"$BIN" apply -f "$WORK/site.yaml" >/dev/null

app() { # version release
  cat <<EOF
kind: Application
name: bench
version: "$1"
services:
  - name: web
    image: $IMAGE
    args: [demo, serve, --listen, "0.0.0.0:8080", --show, /etc/bench/config.toml]
    env:
      GREETING: "{{ site.variables.greeting }}"
      STORE_ID: "{{ site.labels.store_id }}"
      RELEASE: "$2"
    files:
      - path: /etc/bench/config.toml
        template: |
          site = "{{ site.name }}"
          release = "$2"
  - name: worker
    image: $IMAGE
    args: [demo, tick, --every, 1s]
    env:
      RELEASE: "$2"
---
kind: Deployment
name: bench
application: bench
placement:
  sites: "bench == $SITE"
EOF
}

TOKEN=$("$BIN" token create --site "$SITE" 2>/dev/null)
ATOLL_LOG=warn "$BIN" agent --control "$URL" --token "$TOKEN" --data-dir "$WORK/agent" \
  2>"$WORK/agent.err" &
AGENT_PID=$!

# The container ids of the running replicas, sorted, one line; empty unless all run.
running_ids() {
  "$BIN" status bench -o json 2>/dev/null | jq -r --arg site "$SITE" '
    [.sites[] | select(.site == $site) | .services[][]] as $r
    | if ($r | length) == 2 and all($r[]; .state == "running")
      then [$r[].container_id] | sort | join(" ") else "" end'
}
# Succeeds when every replica runs, in containers none of which is in $1.
all_running_anew() {
  local ids
  ids=$(running_ids)
  [ -n "$ids" ] || return 1
  for id in $ids; do
    case " $1 " in *" $id "*) return 1 ;; esac
  done
}

app 0 r0 >"$WORK/app.yaml"
start=$(now_ms)
"$BIN" apply -f "$WORK/app.yaml" >/dev/null
wait_for 60 all_running_anew ""
FIRST=$(( $(now_ms) - start ))

echo "idle for ${IDLE_RSS_AFTER} s, then measuring CPU over ${IDLE_CPU_OVER} s..." >&2
sleep "$IDLE_RSS_AFTER"
RSS_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status")
ticks() { awk '{ print $14 + $15 }' "/proc/$AGENT_PID/stat"; }
HZ=$(getconf CLK_TCK)
T0=$(ticks); S0=$(now_ms)
sleep "$IDLE_CPU_OVER"
T1=$(ticks); S1=$(now_ms)
CPU=$(awk -v t="$(( T1 - T0 ))" -v hz="$HZ" -v ms="$(( S1 - S0 ))" \
  'BEGIN { printf "%.3f", 100 * (t / hz) / (ms / 1000) }')

LATENCIES=()
for round in $(seq 1 "$ROUNDS"); do
  before=$(running_ids)
  app "1.$round" "r$round" >"$WORK/app.yaml"
  start=$(now_ms)
  "$BIN" apply -f "$WORK/app.yaml" >/dev/null
  wait_for 120 all_running_anew "$before"
  took=$(( $(now_ms) - start ))
  LATENCIES+=("$took")
  echo "round $round: apply → running in $took ms" >&2
done
MEDIAN=$(printf '%s\n' "${LATENCIES[@]}" | sort -n | awk '
  { v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')

SIZE=$(stat -c %s "$BIN")
echo "release binary:          $SIZE bytes ($(awk -v s="$SIZE" 'BEGIN { printf "%.1f", s / 1048576 }') MiB, stripped)"
echo "agent idle RSS:          $RSS_KB kB (VmRSS after ${IDLE_RSS_AFTER} s idle)"
echo "agent idle CPU:          $CPU % of one core (over ${IDLE_CPU_OVER} s)"
echo "first apply → running:   $FIRST ms (no container to replace)"
echo "apply → running, median: $MEDIAN ms over $ROUNDS new versions (all: ${LATENCIES[*]} ms)"
