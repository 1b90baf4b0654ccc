#!/usr/bin/env bash
# Runs Postern's benchmarks and prints a summary.
#
#   whole chain   BenchmarkChain/{direct,tls,quic}, BenchmarkConnect/{tls,quic}
#                 (./integration/)
#   tunnel        BenchmarkStreamOpen, BenchmarkBulkCopy, BenchmarkRoundTrip,
#                 BenchmarkCoalescingConn
#                 (./protocols/tunnel/...)
#   relay         BenchmarkRelay (./protocols/tcp/)
#   postgres      BenchmarkPgbench/{select,select-prepared,tpcb}/{direct,tls,tls-raw,quic,quic-raw}
#                 and the yardsticks relay, relay2 (one and two plain TCP relay
#                 hops in Go) and socat, socat2 (the same in C, when socat is
#                 installed) (./integration/, pgbench against 127.0.0.1:5432), and the
#                 handler's own: BenchmarkQuery (./protocols/postgres/),
#                 BenchmarkClassify, BenchmarkClassifyShape,
#                 BenchmarkAuthorizePostgresStatement
#   audit         BenchmarkPgbench/{select,select-prepared,tpcb}/recording (the
#                 TLS chain) and BenchmarkRecording/{chain,connect}/{tls,quic}
#                 (./integration/): the chain with recording on and off (a gateway recording nothing),
#                 alternating runs, on/off the median of the rounds' ratios; BenchmarkRecord,
#                 BenchmarkWholeSessions, BenchmarkCompressSealed, BenchmarkVerify
#                 (./gateway/audit/), BenchmarkAuditList (./cmd/postern/:
#                 `audit list` over 10,000 sessions), BenchmarkSessions
#                 (./gateway/audit/ui/), BenchmarkSessionsAll (./gateway/store/sqlite/)
#   http, grpc    BenchmarkHTTP/{direct,relay2,revproxy,tls,tls-raw,quic},
#                 BenchmarkGRPC/{direct,relay2,revproxy,grpcproxy,tls,tls-raw,quic}
#                 (./integration/: 50 keep-alive connections, unary calls 50 in
#                 flight), and the per-request parts: BenchmarkAuthorizeHTTPRequest,
#                 BenchmarkCleanPath, BenchmarkAssert, BenchmarkAuthenticate*
#
# The raw `go test` output goes to bin/bench.out (BENCH_OUT to change it);
# the summary (medians over the -count runs, each chain transport's ratio to
# direct) is computed from that same file. Knobs, all optional:
#   BENCHTIME (3s) and BENCHCOUNT (3) for the chain benchmarks,
#   MICROTIME (1s) and MICROCOUNT (3) for the tunnel and relay ones, GO (go),
#   SETTLE (360) seconds of pause before each recording connect run.
# The machine's load average is recorded before and after each run: figures
# taken while other work competes for the CPUs are low and noisy.
#
# Exits 0 when every benchmark ran; 1 when one failed (the summary is still
# printed for what did run).
set -u
cd "$(dirname "$0")/.." || exit 1

go_cmd=${GO:-go}
benchtime=${BENCHTIME:-3s}
count=${BENCHCOUNT:-3}
microtime=${MICROTIME:-1s}
microcount=${MICROCOUNT:-3}
settle=${SETTLE:-360}
out=${BENCH_OUT:-bin/bench.out}

mkdir -p "$(dirname "$out")" || exit 1
: >"$out" || exit 1

load() {
  # The load average alone, from /proc when there is one.
  if [ -r /proc/loadavg ]; then
    cut -d' ' -f1-3 /proc/loadavg
  else
    uptime | sed 's/.*load average[s]*: *//'
  fi
}

{
  echo "# postern benchmarks"
  echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "# $("$go_cmd" version)"
  echo "# cpus: $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo unknown)"
} >>"$out"

failed=0
# run LABEL GO-TEST-ARGS...: one `go test` run, its output appended to $out
# and shown as it comes.
run() {
  label=$1
  shift
  echo "== $label" | tee -a "$out"
  echo "# load before: $(load)" | tee -a "$out"
  "$go_cmd" test -run '^$' "$@" 2>&1 | tee -a "$out"
  status=${PIPESTATUS[0]}
  echo "# load after: $(load)" | tee -a "$out"
  if [ "$status" -ne 0 ]; then
    echo "# FAILED ($status): go test $*" | tee -a "$out"
    failed=1
  fi
}

run chain -bench '^(BenchmarkChain|BenchmarkConnect)$' -benchtime "$benchtime" -count "$count" ./integration/
run tunnel -bench '^(BenchmarkStreamOpen|BenchmarkBulkCopy|BenchmarkRoundTrip|BenchmarkCoalescingConn)$' -benchtime "$microtime" -count "$microcount" ./protocols/tunnel/...
run relay -bench '^BenchmarkRelay$' -benchtime "$microtime" -count "$microcount" ./protocols/tcp/
run postgres -bench '^BenchmarkPgbench$/./(direct|relay|relay2|socat|socat2|tls|tls-norec|tls-raw|quic|quic-raw)$' -benchtime "$benchtime" -count "$count" ./integration/
# Recording on against off, interleaved in 8 rounds of 16,000 transactions a
# client and path (TPC-B: of 2,000), runs of a few seconds: shorter ones weigh
# each pgbench connection's start and its recording's seal as if sessions were
# a few hundred milliseconds long (docs/BENCHMARKS.md).
run recording -bench '^BenchmarkPgbench$/(select|select-prepared)/recording$' -benchtime 1024000x -count "$count" ./integration/
run recording -bench '^BenchmarkPgbench$/tpcb/recording$' -benchtime 128000x -count "$count" ./integration/
# The same for bulk throughput (16 runs of 256 MiB) and new connections (16 runs
# of 256), over each transport. Each connect run is a process of its own after
# a pause of SETTLE seconds: a run's cleanup removes its thousands of
# recordings, and on ext4 without a journal every file created in the next
# minutes scans past the inodes removed (docs/BENCHMARKS.md), which would be
# counted as recording's cost (0.64-0.69 instead of 0.80-0.87 on/off).
run recording -bench '^BenchmarkRecording$/chain' -benchtime 4096x -count "$count" ./integration/
for _ in $(seq "$count"); do
  echo "# settling ${settle}s: recent removals slow file creation" | tee -a "$out"
  sleep "$settle"
  run recording -bench '^BenchmarkRecording$/connect' -benchtime 4096x -count 1 ./integration/
done
run classify -bench '^(BenchmarkClassify|BenchmarkClassifyShape)$' -benchtime "$microtime" -count "$microcount" ./protocols/postgres/classify/
run pghandler -bench '^BenchmarkQuery$' -benchtime "$microtime" -count "$microcount" ./protocols/postgres/
run pgpolicy -bench '^BenchmarkAuthorizePostgresStatement$' -benchtime "$microtime" -count "$microcount" ./gateway/policy/
run audit -bench '^(BenchmarkRecord|BenchmarkWholeSessions|BenchmarkCompressSealed|BenchmarkVerify|BenchmarkAuditList|BenchmarkSessions|BenchmarkSessionsAll)$' -benchtime "$microtime" -count "$microcount" ./gateway/audit/ ./cmd/postern/ ./gateway/audit/ui/ ./gateway/store/sqlite/
run http -bench '^(BenchmarkHTTP|BenchmarkGRPC)$' -benchtime "$benchtime" -count "$count" ./integration/
run httpparts -bench '^(BenchmarkAuthorizeHTTPRequest|BenchmarkCleanPath|BenchmarkAssert|BenchmarkAuthenticateAPIKey|BenchmarkAuthenticateJWT)$' -benchtime "$microtime" -count "$microcount" ./gateway/policy/ ./protocols/http/ ./gateway/assertion/ ./gateway/bearer/

echo
echo "raw output: $out"
echo
awk '
# Benchmark names lose their -GOMAXPROCS suffix. A result line whose name
# was split off by stray output is credited to the last name seen.
function median(key,   n, i, j, v, a) {
  n = cnt[key]
  for (i = 1; i <= n; i++) a[i] = vals[key, i]
  for (i = 2; i <= n; i++) {       # insertion sort, n is small
    v = a[i]
    for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
    a[j + 1] = v
  }
  if (n == 0) return ""
  if (n % 2) return a[(n + 1) / 2]
  return (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(key, v) {
  if (!(key in cnt)) { cnt[key] = 0; order[++norder] = key }
  cnt[key]++
  vals[key, cnt[key]] = v + 0
}
function fmtns(ns) {
  if (ns >= 1e6) return sprintf("%.2f ms", ns / 1e6)
  if (ns >= 1e3) return sprintf("%.1f us", ns / 1e3)
  return sprintf("%.0f ns", ns)
}
/^# load (before|after):/ { loads = loads "  " $0 "\n" }
/^Benchmark/ { name = $1; sub(/-[0-9]+$/, "", name) }
/ns\/op/ {
  if (name == "") next
  for (i = 2; i <= NF; i++) {
    if ($i == "ns/op") add(name SUBSEP "ns", $(i - 1))
    if ($i == "MB/s") add(name SUBSEP "mbs", $(i - 1))
    if ($i == "tps") add(name SUBSEP "tps", $(i - 1))
    if ($i == "ms/txn") add(name SUBSEP "lat", $(i - 1))
    if ($i == "req/s") add(name SUBSEP "rps", $(i - 1))
    if ($i == "p50-ms") add(name SUBSEP "p50", $(i - 1))
    if ($i == "p99-ms") add(name SUBSEP "p99", $(i - 1))
    if ($i == "on/off") add(name SUBSEP "onoff", $(i - 1))
    if ($i ~ /^on-/ && $i !~ /cpu/) { add(name SUBSEP "on", $(i - 1)); unit[name] = substr($i, 4) }
    if ($i ~ /^off-/ && $i !~ /cpu/) add(name SUBSEP "off", $(i - 1))
    if ($i ~ /^on-machine-cpu/) add(name SUBSEP "onm", $(i - 1))
    if ($i ~ /^off-machine-cpu/) add(name SUBSEP "offm", $(i - 1))
  }
}
END {
  direct = median("BenchmarkChain/direct" SUBSEP "mbs")
  printf "Chain throughput, one connection, 1 MiB writes (median of runs)\n"
  printf "  %-8s %10s %10s %6s\n", "path", "MB/s", "x direct", "runs"
  for (k = 1; k <= norder; k++) {
    split(order[k], p, SUBSEP)
    if (p[2] != "mbs" || p[1] !~ /^BenchmarkChain\//) continue
    m = median(order[k])
    t = p[1]; sub(/^BenchmarkChain\//, "", t)
    ratio = (direct > 0) ? sprintf("%.3f", m / direct) : "n/a"
    printf "  %-8s %10.1f %10s %6d\n", t, m, ratio, cnt[order[k]]
  }
  printf "\nConnect: new client TLS connection to first echoed byte (median)\n"
  for (k = 1; k <= norder; k++) {
    split(order[k], p, SUBSEP)
    if (p[2] != "ns" || p[1] !~ /^BenchmarkConnect\//) continue
    t = p[1]; sub(/^BenchmarkConnect\//, "", t)
    printf "  %-8s %10s/op %6d runs\n", t, fmtns(median(order[k])), cnt[order[k]]
  }
  printf "\npgbench, 4 clients, statement policy on (median of runs; x relay2: against two bare hops)\n"
  printf "  %-18s %10s %10s %10s %10s\n", "script/path", "tps", "ms/txn", "x direct", "x relay2"
  for (k = 1; k <= norder; k++) {
    split(order[k], p, SUBSEP)
    if (p[2] != "tps" || p[1] !~ /^BenchmarkPgbench\//) continue
    t = p[1]; sub(/^BenchmarkPgbench\//, "", t)
    split(t, q, "/")
    d = median("BenchmarkPgbench/" q[1] "/direct" SUBSEP "tps")
    r2 = median("BenchmarkPgbench/" q[1] "/relay2" SUBSEP "tps")
    m = median(order[k])
    ratio = (d > 0) ? sprintf("%.3f", m / d) : "n/a"
    ratio2 = (r2 > 0) ? sprintf("%.3f", m / r2) : "n/a"
    printf "  %-18s %10.1f %10.3f %10s %10s\n", t, m, median(p[1] SUBSEP "lat"), ratio, ratio2
  }
  printf "\nRecording: the chain with recording on, against the same chain recording nothing\n"
  printf "(alternating runs; on/off is the median of the rounds ratios, then of the -count runs;\n"
  printf "machine CPU: the busy time of the whole machine a unit, on against off)\n"
  for (k = 1; k <= norder; k++) {
    split(order[k], p, SUBSEP)
    if (p[2] != "onoff") continue
    t = p[1]; sub(/^Benchmark/, "", t); sub(/\/recording$/, "", t)
    r = median(order[k])
    u = unit[p[1]]
    om = median(p[1] SUBSEP "offm")
    mc = (om > 0) ? sprintf(", machine CPU %+.1f%%", (median(p[1] SUBSEP "onm") / om - 1) * 100) : ""
    printf "  %-26s on %10.1f %s, off %10.1f %s, on/off %.3f: %+.1f%%%s\n", t, median(p[1] SUBSEP "on"), u, median(p[1] SUBSEP "off"), u, r, (r - 1) * 100, mc
  }
  printf "\nHTTP (50 keep-alive connections) and gRPC (unary, 50 in flight), per-request policy on (median of runs;\n"
  printf "x revproxy: against one hop of httputil.ReverseProxy)\n"
  printf "  %-14s %10s %8s %8s %10s %10s %10s\n", "bench/path", "req/s", "p50 ms", "p99 ms", "x direct", "x relay2", "x revproxy"
  for (k = 1; k <= norder; k++) {
    split(order[k], p, SUBSEP)
    if (p[2] != "rps" || p[1] !~ /^Benchmark(HTTP|GRPC)\//) continue
    t = p[1]; sub(/^Benchmark/, "", t)
    split(p[1], q, "/")
    d = median(q[1] "/direct" SUBSEP "rps")
    r2 = median(q[1] "/relay2" SUBSEP "rps")
    rp = median(q[1] "/revproxy" SUBSEP "rps")
    m = median(order[k])
    ratio = (d > 0) ? sprintf("%.3f", m / d) : "n/a"
    ratio2 = (r2 > 0) ? sprintf("%.3f", m / r2) : "n/a"
    ratio3 = (rp > 0) ? sprintf("%.3f", m / rp) : "n/a"
    printf "  %-14s %10.0f %8.2f %8.2f %10s %10s %10s\n", t, m, median(p[1] SUBSEP "p50"), median(p[1] SUBSEP "p99"), ratio, ratio2, ratio3
  }
  printf "\nMicrobenchmarks (median)\n"
  for (k = 1; k <= norder; k++) {
    split(order[k], p, SUBSEP)
    if (p[2] != "ns" || p[1] ~ /^Benchmark(Chain|Connect|Pgbench|HTTP|GRPC)\//) continue
    mb = ""
    if ((p[1] SUBSEP "mbs") in cnt) mb = sprintf("%10.1f MB/s", median(p[1] SUBSEP "mbs"))
    printf "  %-28s %12s/op %s\n", p[1], fmtns(median(order[k])), mb
  }
  printf "\nLoad average (1, 5, 15 min) around each run\n%s", loads
}
' "$out"

exit "$failed"
