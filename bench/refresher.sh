#!/usr/bin/env bash
# The background refresher's per-tick cost with 100,000 stored connections,
# when none is due and when 1,000 are due, on SQLite and on PostgreSQL, next to
# a SELECT 1 round trip measured in the same run. The claim uses the partial
# index on next_refresh_at, so the cost follows the number due, not stored.
#
#   bench/refresher.sh              # 100,000 connections
#   CONNECTIONS=1000000 bench/refresher.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-100000}
PG_ADMIN=${NEXUS_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=bench/results
mkdir -p "$RESULTS"
cargo build --release --locked -q -p nexus-store --example refresher_tick
BIN=target/release/examples/refresher_tick
work=$(mktemp -d)
db="nexus_bench_refresher_$$"
trap 'psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
report=$RESULTS/refresher-$(date -u +%Y%m%dT%H%M%SZ).txt
"$BIN" "sqlite://$work/bench.db" "$CONNECTIONS" | tee "$report"
psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
"$BIN" "${PG_ADMIN%/*}/$db" "$CONNECTIONS" | tee -a "$report"
echo "saved to $report"
