#!/usr/bin/env bash
# Latency and throughput added by Nexus's proxies, in one run on this machine:
#   direct      wrk → upstream (an nginx answering 200 "ok")
#   nginx       wrk → nginx proxy_pass → upstream            (the baseline)
#   gateway     wrk → nexus serve /v1/proxy/{id}/… → upstream (signs: api_key header)
#   sidecar     wrk → nexus proxy /{id}/… → upstream          (bridge cache, signs locally)
# Reports requests/s, p50, p99, the p50 added over direct and that as a
# multiple of nginx's, once with one connection (the latency a hop adds) and
# once with many (under load); every figure is the median of interleaved rounds.
#
#   bench/proxy.sh                 # 3 rounds of 5 s per target, 32 connections
#   ROUNDS=5 DURATION=10s bench/proxy.sh
#   INSTRUCTIONS=1 bench/proxy.sh  # instead: CPU instructions per request of
#                                  # each proxy, counted by callgrind
#                                  # (the same figure on every run, however busy
#                                  # the machine)
#   INSTRUCTIONS=1 PROFILES=dir bench/proxy.sh
#                                  # also keeps each proxy's callgrind profile
#                                  # in dir (callgrind_annotate dir/gateway.cg.1)
#   HYPER=1 bench/proxy.sh         # also: "hyper", the sidecar's hop built on
#                                  # hyper's connection-level APIs
#                                  # (crates/nexus-bridge/examples/hyper_sidecar.rs),
#                                  # to weigh the relay against it
#   SYSCALLS=1 bench/proxy.sh      # instead: system calls per request of each
#                                  # proxy, counted by strace
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
RESULTS=bench/results
mkdir -p "$RESULTS"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v wrk >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
[ -z "${SYSCALLS:-}" ] || command -v strace >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace >/dev/null
[ -z "${INSTRUCTIONS:-}" ] || command -v valgrind >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -n "${NO_BUILD:-}" ] || cargo build --profile dist --locked -q -p nexus-cli
[ -n "${NO_BUILD:-}" ] || [ -z "${HYPER:-}" ] || cargo build --profile dist --locked -q -p nexus-bridge --example hyper_sidecar
BIN=${BIN:-$PWD/target/dist/nexus}
HYPER_BIN=${HYPER_BIN:-$PWD/target/dist/examples/hyper_sidecar}

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

up=$(free_port); np=$(free_port); gp=$(free_port); sp=$(free_port); hp=$(free_port)
# Two nginx processes: the upstream, and the nginx proxy in front of it. (One
# process serving both would let nginx reach the upstream without waking
# another process, a shortcut no real proxy has; every proxy here is one
# process between wrk and the upstream.)
# With INSTRUCTIONS set, the three proxies run under callgrind, counting nothing
# until told to (see `instructions` below).
counted() { # name, command… (always started with `&`: it execs, so $! is its pid)
  if [ -n "${INSTRUCTIONS:-}" ]; then
    cd "$work" # where callgrind_control finds it
    exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$1.cg" "${@:2}" 2> "$work/$1.valgrind"
  fi
  exec "${@:2}"
}
nginx_conf() { # name, server block, [counted]
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/$1/pid; error_log $work/$1/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1; uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  $2
}
CONF
  if [ -n "${3:-}" ]; then
    counted nginx "$NGINX" -c "$work/$1/nginx.conf" -p "$work/$1" & pids+=($!)
  else
    "$NGINX" -c "$work/$1/nginx.conf" -p "$work/$1" & pids+=($!)
  fi
}
nginx_conf upstream "server { listen 127.0.0.1:$up; location / { default_type text/plain; return 200 \"ok\"; } }"
nginx_conf proxy "server { listen 127.0.0.1:$np; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" counted
wait_http "http://127.0.0.1:$up/"
wait_http "http://127.0.0.1:$np/"

key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
API_KEY=$key ENCRYPTION_KEY=$($BIN keygen | sed -n 's/^ENCRYPTION_KEY=//p') STATE_KEY=$($BIN keygen | sed -n 's/^STATE_KEY=//p') AUDIT_KEYS=$($BIN keygen | sed -n 's/^AUDIT_KEYS=//p') \
  DATABASE_URL="sqlite://$work/nexus.db" BIND=127.0.0.1:$gp RUST_LOG=warn counted gateway "$BIN" serve > "$work/serve.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$gp/health"
g=http://127.0.0.1:$gp
curl -sf -X POST "$g/v1/providers" -H "X-API-Key: $key" -H 'Content-Type: application/json' -d "{
  \"name\": \"bench\", \"auth_type\": \"api_key\", \"api_base_url\": \"http://127.0.0.1:$up\",
  \"params\": {\"credential_schema\": {\"type\": \"object\", \"required\": [\"api_key\"], \"properties\": {\"api_key\": {\"type\": \"string\"}}}}}" >/dev/null
state=$(curl -sf -X POST "$g/v1/request-connection" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
  -d '{"workspace_id": "bench", "provider_name": "bench", "return_url": "https://example.com/done"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
conn=$(curl -sf -X POST "$g/v1/capture-credential" -H "X-API-Key: $key" -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -d "{\"state\": \"$state\", \"credentials\": {\"api_key\": \"bench-key\"}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connection_id"])')
API_KEY=$key RUST_LOG=warn counted sidecar "$BIN" proxy --listen 127.0.0.1:$sp --gateway "$g" > "$work/proxy.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$sp/$conn/x"
if [ -n "${HYPER:-}" ]; then
  counted hyper "$HYPER_BIN" 127.0.0.1:$hp "http://127.0.0.1:$up" > "$work/hyper.log" 2>&1 & pids+=($!)
  wait_http "http://127.0.0.1:$hp/$conn/x"
fi
for url in "$g/v1/proxy/$conn/x" "http://127.0.0.1:$sp/$conn/x"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $key" "$url")
  [ "$code" = 200 ] || { echo "$url answered $code" >&2; exit 1; }
done

measure() { # connections, wrk args… → "req/s p50 p99"
  local c=$1; shift
  wrk -t1 -c"$c" -d"$DURATION" --latency "$@" > "$work/wrk.txt"
  python3 - "$work/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if bad: print("warning: %s non-2xx responses" % bad.group(1), file=sys.stderr)
print("%.0f %.3f %.3f" % (float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)), ms(re.search(r"\s50%\s+(\S+)", t).group(1)), ms(re.search(r"\s99%\s+(\S+)", t).group(1))))
PY
}
TARGETS="direct nginx gateway sidecar${HYPER:+ hyper}"
url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$up/x" ;;
    nginx) echo "http://127.0.0.1:$np/x" ;;
    gateway) echo "$g/v1/proxy/$conn/x" ;;
    sidecar) echo "http://127.0.0.1:$sp/$conn/x" ;;
    hyper) echo "http://127.0.0.1:$hp/$conn/x" ;;
  esac
}
# One pass: ROUNDS rounds, each measuring every target once in turn (so a
# slow spell of the machine hits all of them alike); each target's row is
# the median of its rounds. "added" is a proxy's p50 minus direct's;
# "vs nginx" is, within each round, a proxy's added p50 divided by nginx's,
# and "rounds" the lowest and highest of those ratios (the median is shown).
pass() { # connections
  local c=$1 round target
  : > "$work/pass.txt"
  for round in $(seq 1 "$ROUNDS"); do
    for target in $TARGETS; do
      echo "$target $(measure "$c" "$(url_of "$target")" -H "X-API-Key: $key")" >> "$work/pass.txt"
    done
  done
  python3 - "$work/pass.txt" "$c" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    target, *vals = line.split()
    rows.setdefault(target, []).append([float(v) for v in vals])
med = {t: [statistics.median(col) for col in zip(*v)] for t, v in rows.items()}
direct_p50 = med["direct"][1]
def round_ratios(t):
    # The same ratio within each round (its own direct and nginx figures):
    # how far apart the rounds are shows how much the machine moved.
    out = []
    for mine, direct, nginx in zip(rows[t], rows["direct"], rows["nginx"]):
        if nginx[1] > direct[1]:
            out.append((mine[1] - direct[1]) / (nginx[1] - direct[1]))
    return out
for t, (rps, p50, p99) in med.items():
    added = "-" if t == "direct" else "%.3f" % (p50 - direct_p50)
    rounds = round_ratios(t) if t not in ("direct", "nginx") else []
    ratio = "%.2f" % statistics.median(rounds) if rounds else "-"
    spread = "%.2f-%.2f" % (min(rounds), max(rounds)) if rounds else "-"
    print("%-8s %5s %10.0f %9.3f %9.3f %14s %9s %12s" % (t, sys.argv[2], rps, p50, p99, added, ratio, spread))
PY
}
# Instructions per request: after a warm-up, callgrind counts while one
# keep-alive connection sends $REQUESTS requests through the proxy.
instructions() { # name, pid, url
  local file="$work/$1.cg.1" total
  drive "$3" 200
  callgrind_control -i on "$2" >/dev/null 2>&1
  drive "$3" "$REQUESTS"
  callgrind_control -i off "$2" >/dev/null 2>&1
  callgrind_control -d "$2" >/dev/null 2>&1
  for _ in $(seq 1 100); do [ -s "$file" ] && break; sleep 0.1; done
  sleep 0.5
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  if [ -n "${PROFILES:-}" ]; then mkdir -p "$PROFILES" && cp "$file" "$PROFILES/"; fi
  echo "$1 $((total / REQUESTS))"
}
drive() { # url, requests
  python3 - "$1" "$2" "$key" <<'PY'
import http.client, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(url.hostname, url.port)
for _ in range(int(sys.argv[2])):
    conn.request("GET", url.path, headers={"X-API-Key": sys.argv[3]})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200, resp.status
PY
}
# System calls per request: after a warm-up, strace attaches to every thread
# of the proxy while one keep-alive connection sends $REQUESTS requests.
syscalls() { # name, pid, url
  local out="$work/$1.strace" tracer
  drive "$3" 200
  strace -f -c -o "$out" -p "$2" 2> "$work/$1.strace-log" & tracer=$!
  for _ in $(seq 1 100); do grep -q attached "$work/$1.strace-log" 2>/dev/null && break; sleep 0.05; done
  sleep 0.2
  drive "$3" "$REQUESTS"
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  python3 - "$out" "$1" "$REQUESTS" <<'PY'
import sys
out, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = {}
for line in open(out):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
per = {k: v / n for k, v in calls.items() if v / n >= 0.05}
top = " ".join("%s=%.1f" % kv for kv in sorted(per.items(), key=lambda kv: -kv[1]))
print("%-8s %9.1f   %s" % (name, sum(calls.values()) / n, top))
PY
}
if [ -n "${SYSCALLS:-}" ]; then
  REQUESTS=${REQUESTS:-5000}
  report=$RESULTS/proxy-syscalls-$(date -u +%Y%m%dT%H%M%SZ).txt
  {
    echo "nexus bench: system calls per proxied request (strace, $REQUESTS requests on one keep-alive connection)"
    printf '%-8s %9s   %s\n' target syscalls "per request (those made at least once per 20 requests)"
    syscalls nginx "${pids[1]}" "$(url_of nginx)"
    syscalls gateway "${pids[2]}" "$(url_of gateway)"
    syscalls sidecar "${pids[3]}" "$(url_of sidecar)"
    [ -z "${HYPER:-}" ] || syscalls hyper "${pids[4]}" "$(url_of hyper)"
  } | tee "$report"
  echo "saved to $report"
  exit 0
fi
if [ -n "${INSTRUCTIONS:-}" ]; then
  REQUESTS=${REQUESTS:-2000}
  report=$RESULTS/proxy-instructions-$(date -u +%Y%m%dT%H%M%SZ).txt
  {
    echo "nexus bench: CPU instructions per proxied request (callgrind, $REQUESTS requests on one keep-alive connection)"
    {
      instructions nginx "${pids[1]}" "$(url_of nginx)"
      instructions gateway "${pids[2]}" "$(url_of gateway)"
      instructions sidecar "${pids[3]}" "$(url_of sidecar)"
      [ -z "${HYPER:-}" ] || instructions hyper "${pids[4]}" "$(url_of hyper)"
    } |
      awk '{ n[NR] = $1; v[NR] = $2 } END { printf "%-8s %14s %9s\n", "target", "instructions", "vs nginx";
        for (i = 1; i <= NR; i++) printf "%-8s %14d %9.2f\n", n[i], v[i], v[i] / v[1] }'
  } | tee "$report"
  echo "saved to $report"
  exit 0
fi
report=$RESULTS/proxy-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "nexus bench: proxies vs direct and nginx proxy_pass (median of $ROUNDS rounds of $DURATION per target, wrk -t1, $(nproc) cores)"
  echo "conns 1: unloaded latency; conns $CONNECTIONS: under load"
  printf '%-8s %5s %10s %9s %9s %14s %9s %12s\n' target conns "req/s" "p50 ms" "p99 ms" "p50 added ms" "vs nginx" "rounds"
  pass 1
  pass "$CONNECTIONS"
} | tee "$report"
echo "saved to $report"
