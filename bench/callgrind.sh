#!/usr/bin/env bash
# Counts wsbroker's own (user-space) instructions per delivery with callgrind, for
# changes too small for wall-clock figures on a shared machine to resolve.
# Repeated runs agree within about 0.1 %. The kernel's work is not counted.
#
#   bench/callgrind.sh rooms|fixed-rate|fanout|fanout-v1 [SERVER_BINARY]
#
# Needs valgrind (callgrind_control, callgrind_annotate), taskset and release builds
# of the server and wsload (`cargo build --release -p wsbroker -p wsbench`). The
# server runs under callgrind on CPU 0 and wsload on CPU 1. Counters are zeroed
# after the warm-up and dumped 4 s later. Deliveries = publishes in that window
# (counted by callgrind, as the frames the readers build) times members per room.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: bench/callgrind.sh rooms|fixed-rate|fanout|fanout-v1 [SERVER_BINARY]}
bin=${2:-target/release/wsbroker}
case $scenario in
  rooms) members=10; load=(--rooms 10 --subscribers 0 --publishers 10 --rate 2) ;;
  fixed-rate) members=1001; load=(--subscribers 1000 --publishers 1 --rate 20) ;;
  fanout) members=1001; load=(--subscribers 1000 --publishers 1) ;;
  fanout-v1) members=1001; load=(--subscribers 1000 --publishers 1 --wsbroker-v1) ;;
  *) echo "unknown scenario: $scenario" >&2; exit 2 ;;
esac
for tool in valgrind callgrind_control callgrind_annotate taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
dir=$(mktemp -d /tmp/wsbroker-callgrind.XXXXXX)
RUST_LOG=info taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  "$bin" --listen 127.0.0.1:0 >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=
for _ in $(seq 300); do
  addr=$(grep -o 'wsbroker listening listen=[0-9.:]*' "$dir/server.log" | sed 's/.*listen=//' || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start; see $dir/server.log" >&2; exit 1; }
# wsload connects, warms up for 7 s and measures for 7 s; the counted window is
# seconds 8 to 12 after it starts.
(sleep 8; callgrind_control -z "$server"; sleep 4; callgrind_control -d "$server") >/dev/null 2>&1 &
control=$!
taskset -c 1 target/release/wsload --addr "$addr" --warmup 7s --duration 7s "${load[@]}" >/dev/null
wait "$control"
kill "$server"; wait "$server" 2>/dev/null || true
dump="$dir/cg.out.1"
total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
# Publishes are counted as calls of `frame::data`, which the reader calls once per
# message it receives (or, in builds where that is inlined, of `frame::build`, which
# it then calls once per message, and the writer once per Close, none of which falls
# in the window); the broker's own functions may be inlined into one another.
# Function names are compressed: the first mention (fn= or cfn=) gives the id.
id=
for counted in data build; do
  id=$( (grep -o "([0-9]*) wsbroker::connection::frame::$counted\$" "$dump" || true) | (grep -o '([0-9]*)' || true) | head -1)
  if [ -n "$id" ]; then break; fi
done
[ -n "$id" ] || { echo "neither frame::data nor frame::build in $dump" >&2; exit 1; }
publishes=$(grep -F -A1 "cfn=$id" "$dump" | awk -F'[= ]' '/^calls=/ { n += $2 } END { print n + 0 }')
[ "$publishes" -gt 0 ] || { echo "no publishes counted; see $dump" >&2; exit 1; }
echo "$scenario: $((total / (publishes * members))) user instructions per delivery" \
  "($total over $publishes publishes x $members members; $bin)"
