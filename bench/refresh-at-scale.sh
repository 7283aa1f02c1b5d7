#!/usr/bin/env bash
# The background refresher at scale: CONNECTIONS OAuth2 connections across 5
# providers (one hanging on every refresh) all due within one minute, renewed
# by 1 and then 3 `nexus serve` replicas on one PostgreSQL; each provider
# answers a refresh after LATENCY_MS. Reports, per replica count, how many of
# the non-hanging providers' connections were renewed before they expired,
# refreshes per second, and the most provider calls in flight at once.
#
#   bench/refresh-at-scale.sh                          # 10,000 connections, 100 ms
#   CONNECTIONS=2000 LATENCY_MS=50 bench/refresh-at-scale.sh
#   REFRESH_CONCURRENCY=16 REFRESH_PER_HOST=8 bench/refresh-at-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-10000}
LATENCY_MS=${LATENCY_MS:-100}
REPLICAS=${REPLICAS:-"1 3"}
RESULTS=bench/results
mkdir -p "$RESULTS"
cargo build --release --locked -q -p nexus-cli
cargo build --release --locked -q -p nexus-testkit --example refresh_at_scale
report=$RESULTS/refresh-at-scale-$(date -u +%Y%m%dT%H%M%SZ).txt
for n in $REPLICAS; do
  target/release/examples/refresh_at_scale target/release/nexus "$n" "$CONNECTIONS" "$LATENCY_MS" | tee -a "$report"
done
echo "saved to $report"
