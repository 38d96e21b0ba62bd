#!/bin/bash
# Instructions per unary call of a sidelb binary, counted by callgrind (not
# timed: stable on a shared, loaded machine). sidelb runs under callgrind in
# front of one C test backend; h2load sends N1, then (a fresh run) N2 Echo/Unary
# calls, 10 at a time on one connection; the difference of the two totals
# divided by N2 - N1 is the per-call cost, start-up and shutdown cancelled out.
#
#   tests/bench/callgrind_per_call.sh [SIDELB_BINARY] [N1] [N2]
#
# Defaults: build/sidelb, 2000, 6000. Needs valgrind and h2load (nghttp2-client).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/build/sidelb}")
N1=${2:-2000}
N2=${3:-6000}
BACKEND=${SIDELB_BUILD:-$ROOT/build}/test_backend

total_ir() { # $1 = calls; prints callgrind's total instruction count
    local d port bport spid bpid ir
    d=$(mktemp -d)
    # one gRPC message: EchoRequest{payload: "x"}
    printf '\x00\x00\x00\x00\x03\x0a\x01x' >"$d/body"
    "$BACKEND" --port 0 --id b1 >"$d/be.log" 2>&1 &
    bpid=$!
    for _ in $(seq 100); do grep -q '^ready' "$d/be.log" && break; sleep 0.1; done
    bport=$(awk '/^ready/{print $2}' "$d/be.log")
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$d/c.json" <<EOF
{"listeners": [{"name": "t", "address": "127.0.0.1:$port", "default_cluster": "echo"}],
 "clusters": [{"name": "echo", "discovery": {"static": ["127.0.0.1:$bport"]}, "policy": {"round_robin": {}}}]}
EOF
    valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" "$BIN" -c "$d/c.json" -l warning >"$d/slb.log" 2>&1 &
    spid=$!
    for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    h2load -n "$1" -c 1 -m 10 -t 1 -d "$d/body" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$port/sidelb.test.Echo/Unary" | grep -q "$1 succeeded" || echo "h2load: not all calls succeeded" >&2
    kill -TERM "$spid"
    wait "$spid" || true
    kill -TERM "$bpid"
    for _ in $(seq 20); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bpid" 2>/dev/null || true
    wait "$bpid" 2>/dev/null || true
    ir=$(awk '/^(summary|totals):/{print $2; exit}' "$d/cg.out")
    rm -rf "$d"
    echo "$ir"
}

a=$(total_ir "$N1")
b=$(total_ir "$N2")
echo "$BIN: $a instructions for $N1 calls, $b for $N2: $(((b - a) / (N2 - N1))) per call"
