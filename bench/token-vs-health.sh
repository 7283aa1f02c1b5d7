#!/usr/bin/env bash
# Loads GET /v1/token/{id} and GET /health on the same `nexus serve` in the same
# run with wrk, on SQLite and on PostgreSQL, and reports requests/s, p50, p99
# and the token/health throughput ratio. Figures are only comparable within one
# run (same machine, same moment); the ratio is the number to watch.
#
#   bench/token-vs-health.sh            # 10 s per endpoint, 32 connections
#   DURATION=30s CONNECTIONS=64 bench/token-vs-health.sh
#
# Needs: wrk (installed from the distribution if missing and root), a release
# build of nexus (built here), and for PostgreSQL the local server used by the
# tests (NEXUS_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
BACKENDS=${BACKENDS:-"sqlite postgres"}
PG_ADMIN=${NEXUS_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=bench/results
mkdir -p "$RESULTS"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; else echo "wrk is required" >&2; exit 1; fi
fi
cargo build --release --locked -q -p nexus-cli
BIN=target/release/nexus

work=$(mktemp -d)
pid=""
db_name=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$db_name" ] && psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wrk --latency output → "rps p50_ms p99_ms"
measure() {
  local url=$1; shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" > "$work/wrk.txt"
  python3 - "$work/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if non2xx: print("warning: %s non-2xx responses" % non2xx.group(1), file=sys.stderr)
print(f"{rps:.0f} {p50:.2f} {p99:.2f}")
PY
}

report=$RESULTS/token-vs-health-$(date -u +%Y%m%dT%H%M%SZ).txt
{
echo "nexus bench: GET /v1/token/{id} vs GET /health ($DURATION each, $CONNECTIONS connections, wrk -t$THREADS, $(nproc) cores)"
printf '%-9s %-7s %10s %9s %9s\n' backend path "req/s" "p50 ms" "p99 ms"
} | tee "$report"

for backend in $BACKENDS; do
  port=$(free_port)
  key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  case $backend in
    sqlite) db_url="sqlite://$work/nexus-$port.db" ;;
    postgres)
      db_name="nexus_bench_$port"
      psql "$PG_ADMIN" -qc "CREATE DATABASE $db_name" >/dev/null
      db_url="${PG_ADMIN%/*}/$db_name" ;;
  esac
  API_KEY=$key ENCRYPTION_KEY=$($BIN keygen | sed -n 's/^ENCRYPTION_KEY=//p') STATE_KEY=$($BIN keygen | sed -n 's/^STATE_KEY=//p') AUDIT_KEYS=$($BIN keygen | sed -n 's/^AUDIT_KEYS=//p') \
    DATABASE_URL=$db_url BIND=127.0.0.1:$port RUST_LOG=warn "$BIN" serve > "$work/server.log" 2>&1 &
  pid=$!
  base=http://127.0.0.1:$port
  for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
  curl -sf -X POST "$base/v1/providers" -H "X-API-Key: $key" -H 'Content-Type: application/json' -d '{
    "name": "bench", "auth_type": "api_key",
    "params": {"credential_schema": {"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}}}}' >/dev/null
  state=$(curl -sf -X POST "$base/v1/request-connection" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d '{"workspace_id": "bench", "provider_name": "bench", "return_url": "https://example.com/done"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  conn=$(curl -sf -X POST "$base/v1/capture-credential" -H "X-API-Key: $key" -H 'Content-Type: application/json' -H 'Accept: application/json' \
    -d "{\"state\": \"$state\", \"credentials\": {\"api_key\": \"bench-key\"}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connection_id"])')
  curl -sf "$base/v1/token/$conn" -H "X-API-Key: $key" >/dev/null

  read -r h_rps h_p50 h_p99 < <(measure "$base/health")
  read -r t_rps t_p50 t_p99 < <(measure "$base/v1/token/$conn" -H "X-API-Key: $key")
  {
  printf '%-9s %-7s %10s %9s %9s\n' "$backend" health "$h_rps" "$h_p50" "$h_p99"
  printf '%-9s %-7s %10s %9s %9s\n' "$backend" token "$t_rps" "$t_p50" "$t_p99"
  python3 -c "print('%-9s ratio token/health throughput = %.2f' % ('$backend', $t_rps / $h_rps))"
  } | tee -a "$report"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  if [ -n "$db_name" ]; then psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null; db_name=""; fi
done
echo "saved to $report"
