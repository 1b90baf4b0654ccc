#!/usr/bin/env bash
# Profiles the whole machine while a recording benchmark alternates runs with
# recording on and off, and splits the samples between the two: CPU time a
# unit (µs a transaction, a connection or a MiB) by process, user and kernel,
# and the symbols whose time differs most. The runs share the machine's
# drift, so this resolves what the ratio of rates cannot (docs/BENCHMARKS.md,
# stop 16).
#
#   scripts/recording-profile.sh [BENCH-REGEXP [BENCHTIME]]
#
# BENCH-REGEXP defaults to '^BenchmarkPgbench$/select-prepared/recording$'
# (any benchmark that uses alternate: BenchmarkPgbench/*/recording,
# BenchmarkRecording/*), BENCHTIME to 1024000x. Needs perf and the right to
# profile the whole machine (root, or kernel.perf_event_paranoid <= -1),
# and what the benchmark needs (pgbench and PostgreSQL on 127.0.0.1:5432).
# TOP (40) is how many symbols to show.
set -eu
cd "$(dirname "$0")/.."

bench=${1:-'^BenchmarkPgbench$/select-prepared/recording$'}
benchtime=${2:-1024000x}
top=${TOP:-40}
hz=999

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/integration.test" ./integration/
(cd integration && POSTERN_BENCH_WINDOWS="$dir/windows" \
  perf record -a -k CLOCK_MONOTONIC -F "$hz" -o "$dir/perf.data" \
  "$dir/integration.test" -test.run '^$' -test.bench "$bench" -test.benchtime "$benchtime" -test.count 1)

perf script -i "$dir/perf.data" -F comm,time,ip,sym,dso 2>/dev/null |
  awk -v windows="$dir/windows" -v hz="$hz" '
BEGIN {
  while ((getline line < windows) > 0) {
    split(line, f, " ")
    if (f[3] - f[2] < 2e8) continue # the benchmark calibration runs
    n++; side[n] = f[1]; from[n] = f[2] / 1e9; to[n] = f[3] / 1e9; units[f[1]] += f[4]
  }
}
{
  # "  COMM  SECONDS:  IP SYMBOL (DSO)"
  t = -1
  for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { t = substr($i, 1, length($i) - 1) + 0; break }
  if (t < 0) next
  s = ""
  for (k = 1; k <= n; k++) if (t >= from[k] && t <= to[k]) { s = side[k]; break }
  if (s == "") next
  comm = $1; for (j = 2; j < i; j++) comm = comm " " $j
  sub(/[\/:].*/, "", comm) # kworker/1:2 is a kworker
  if (comm == "swapper") comm = "(idle)"
  if (comm == "integration.tes") comm = "postern"
  sym = ""; for (j = i + 2; j < NF; j++) sym = sym (sym == "" ? "" : " ") $j
  ring = ($NF ~ /kernel/) ? "kernel" : "user"
  proc[s, comm " " ring]++; procs[comm " " ring] = 1
  if (comm != "(idle)") { proc[s, "(busy, all)"]++; procs["(busy, all)"] = 1 }
  syms[s, comm ": " sym]++; names[comm ": " sym] = 1
}
function show(tag, key, count) {
  on = count["on", key] / units["on"] * 1e6 / hz
  off = count["off", key] / units["off"] * 1e6 / hz
  printf "%s\t%.3f\t%8.2f %8.2f %+8.2f  %s\n", tag, on - off, on, off, on - off, key
}
END {
  if (units["on"] == 0 || units["off"] == 0) { print "no runs recorded" > "/dev/stderr"; exit 1 }
  printf "H\t%d units on, %d off\n", units["on"], units["off"]
  for (p in procs) if (proc["on", p] + proc["off", p] >= 10) show("P", p, proc) # not the stray daemons
  for (y in names) show("S", y, syms)
}' >"$dir/split"

echo
grep '^H' "$dir/split" | cut -f2
echo "CPU µs a unit:      on      off   on−off"
grep '^P' "$dir/split" | sort -t"$(printf '\t')" -k2,2gr | cut -f3-
echo
echo "Symbols, the $top that grow most and the 10 that shrink most with recording on:"
grep '^S' "$dir/split" | sort -t"$(printf '\t')" -k2,2gr | head -n "$top" | cut -f3-
echo "  ..."
grep '^S' "$dir/split" | sort -t"$(printf '\t')" -k2,2gr | tail -n 10 | cut -f3-
