#!/usr/bin/env bash
# Compares two wsbroker builds in alternating runs (A, B, A, B, ...), the way
# bench/NOTES.md asks for a change on the hot path: same scenario, same machine,
# taking turns so that the machine's drift falls on both.
#
#   bench/ab.sh BINARY_A BINARY_B SCENARIO [RUNS]
#
# SCENARIO is fanout-1000, fanout-100x10, fanout-1000-v1, fixed-rate or rooms (as in
# `cargo xtask bench`). Each run starts a fresh server on CPU 0 and wsload on CPU 1
# (build wsload first: `cargo build --release -p wsbench`). Prints one line per run
# and, at the end, the median of each side: deliveries per server-CPU-second for the
# flat-out scenarios, p50/p99 latency in ms for the fixed-rate ones.
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?usage: bench/ab.sh BINARY_A BINARY_B SCENARIO [RUNS]}
b=${2:?usage: bench/ab.sh BINARY_A BINARY_B SCENARIO [RUNS]}
scenario=${3:?usage: bench/ab.sh BINARY_A BINARY_B SCENARIO [RUNS]}
runs=${4:-5}
case $scenario in
  fanout-1000) load=(--subscribers 1000 --publishers 1) ;;
  fanout-100x10) load=(--subscribers 100 --publishers 10) ;;
  fanout-1000-v1) load=(--subscribers 1000 --publishers 1 --wsbroker-v1) ;;
  fixed-rate) load=(--subscribers 1000 --publishers 1 --rate 1000) ;;
  rooms) load=(--rooms 100 --subscribers 0 --publishers 10 --rate 10) ;;
  *) echo "unknown scenario: $scenario" >&2; exit 2 ;;
esac
wsload=target/release/wsload
[[ -x $wsload ]] || { echo "build wsload first: cargo build --release -p wsbench" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"
out=$(mktemp -d /tmp/wsbroker-ab.XXXXXX)

one_run() { # binary label
  local bin=$1 label=$2 log=$out/server.log
  RUST_LOG=info taskset -c 0 "$bin" --listen 127.0.0.1:0 --log-format json 2>"$log" &
  local pid=$! addr=""
  for _ in $(seq 1 100); do
    addr=$(grep -o '"listen":"[^"]*"' "$log" 2>/dev/null | head -n1 | cut -d'"' -f4 || true)
    [[ -n $addr ]] && break
    sleep 0.05
  done
  if [[ -z $addr ]]; then echo "$label: server did not start" >&2; kill "$pid"; return 1; fi
  taskset -c 1 "$wsload" --addr "$addr" --server-pid "$pid" --label "$label" "${load[@]}" >"$out/$label.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$out/$label.json" "$label" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if r["mode"] == "flat-out":
    print(f'{sys.argv[2]} {r["deliveries_per_server_cpu_s"] / 1e6:.3f}')
else:
    print(f'{sys.argv[2]} {r["latency_ms"]["p50"]:.3f} {r["latency_ms"]["p99"]:.3f}')
EOF
}

: >"$out/results"
for i in $(seq 1 "$runs"); do
  one_run "$a" "A$i" | tee -a "$out/results"
  one_run "$b" "B$i" | tee -a "$out/results"
done
python3 - "$out/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for side in "AB":
    vals = [list(map(float, r[1:])) for r in rows if r[0].startswith(side)]
    cols = list(zip(*vals))
    med = " ".join(f"{statistics.median(c):.3f}" for c in cols)
    spread = " ".join(f"[{min(c):.3f}..{max(c):.3f}]" for c in cols)
    print(f"median {side}: {med}  range {spread}")
EOF
