#!/usr/bin/env bash
# Peer transfer benchmark (see BENCHMARKS.md, "Peer transfer").
#
# One 1 GiB file from one peer to another over loopback, verified, compared
# with a plain file -> TCP -> file copy of the same bytes (std I/O, 1 MiB
# buffers, fsync at the end, like the download) run in the same script.
# Also times `serve`'s hashing of the share folder against b3sum.
#
#   bench/transfer.sh [SIZE_MIB] [RUNS]      (defaults: 1024, 3)
#
# Needs: a release build (done here), b3sum (apt-get install -y b3sum).
# Everything lives in a temp dir that is removed at the end.
set -euo pipefail
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release -p sbcftp-peer --bin sbcftp-peer >&2
BIN=$ROOT/target/release
# The tracker's speed does not matter here; TRACKER_BIN may name any build.
if [ -z "${TRACKER_BIN:-}" ]; then
  cargo build --release -p sbcftp-tracker --bin sbcftp-tracker >&2
  TRACKER_BIN=$BIN/sbcftp-tracker
fi
WORK=$(mktemp -d /tmp/sbcftp-bench.XXXXXX)
rustc -O --edition 2021 "$ROOT/bench/tcp_copy_baseline.rs" -o "$WORK/tcp_copy_baseline"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/share" "$WORK/dl"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$WORK/share/big.bin"
BYTES=$(stat -c %s "$WORK/share/big.bin")
cat "$WORK/share/big.bin" > /dev/null   # page cache, for every contender alike

# Hashing: b3sum vs serve's scan (a fresh cache dir each time).
b3=()
for _ in $(seq "$RUNS"); do
  s=$(date +%s.%N); b3sum "$WORK/share/big.bin" > /dev/null; e=$(date +%s.%N)
  b3+=("$(echo "$e - $s" | bc -l)")
done

# Tracker.
PORT=$((20000 + RANDOM % 20000))
"$TRACKER_BIN" --listen 127.0.0.1:$PORT --database-url "sqlite://$WORK/t.db?mode=rwc" \
  > "$WORK/tracker.log" 2>&1 &
PIDS+=($!)
TRACKER=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -fs "$TRACKER/healthz" > /dev/null 2>&1 && break; sleep 0.1; done

hash_secs=()
for i in $(seq "$RUNS"); do
  log=$WORK/hash$i.log
  "$BIN/sbcftp-peer" --tracker "$TRACKER" serve --share "$WORK/share" --listen 127.0.0.2:0 \
    --cache-dir "$WORK/cache$i" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -qs "registered with the tracker" "$log" && break; sleep 0.1; done
  hash_secs+=("$(grep -o 'secs=[0-9.]*' "$log" | head -1 | cut -d= -f2)")
  if [ "$i" -lt "$RUNS" ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; else PIDS+=($pid); fi
done
HASH=$(b3sum --no-names "$WORK/share/big.bin")

best() { printf '%s\n' "$@" | sort -g | head -1; }
mbps() { echo "$BYTES / $1 / 1000000" | bc -l | xargs printf '%.0f'; }

base=(); real=()
for i in $(seq "$RUNS"); do
  rm -f "$WORK/dl/big.bin" "$WORK/base.bin"
  out=$("$WORK/tcp_copy_baseline" "$WORK/share/big.bin" "$WORK/base.bin" 127.0.0.3)
  base+=("$(echo "$out" | cut -d' ' -f2)")
  rm -f "$WORK/base.bin"
  s=$(date +%s.%N)
  "$BIN/sbcftp-peer" --tracker "$TRACKER" get "$HASH" --out "$WORK/dl" > /dev/null
  e=$(date +%s.%N)
  real+=("$(echo "$e - $s" | bc -l)")
  cmp -s "$WORK/dl/big.bin" "$WORK/share/big.bin" || { echo "MISMATCH" >&2; exit 1; }
done

B=$(best "${base[@]}"); R=$(best "${real[@]}")
# Runs alternate baseline/get, so each pair saw about the same machine load.
ratios=()
for i in $(seq 0 $((RUNS - 1))); do ratios+=("$(echo "${base[$i]} / ${real[$i]}" | bc -l)"); done
MED=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
H=$(best "${hash_secs[@]}"); X=$(best "${b3[@]}")
echo "file: $SIZE_MIB MiB, $RUNS runs each, best run shown; all runs: baseline ${base[*]} s, get ${real[*]} s"
printf 'baseline file->TCP->file : %6.3f s  %5s MB/s\n' "$B" "$(mbps "$B")"
printf 'sbcftp-peer get (verified): %6.3f s  %5s MB/s   (whole command: tracker lookup, outline, verify, fsync, rename)\n' "$R" "$(mbps "$R")"
printf 'ratio get / baseline      : %.2f (best runs), %.2f (median of the per-run pairs)\n' "$(echo "$B / $R" | bc -l)" "$MED"
printf 'hashing: serve %.3f s (%s MB/s), b3sum %.3f s (%s MB/s), ratio b3sum/serve %.2f\n' \
  "$H" "$(mbps "$H")" "$X" "$(mbps "$X")" "$(echo "$X / $H" | bc -l)"
