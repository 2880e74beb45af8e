#!/usr/bin/env bash
# Peer transfer benchmark (see BENCHMARKS.md, "Peer transfer").
#
# One file (default 1 GiB, random bytes, in the page cache) downloaded over
# loopback, every case in the same rounds, interleaved, so each round sees
# about the same machine load; the median of RUNS rounds is reported.
#
#   baselines (same work: the bytes land in a file, then fsync):
#     socat    socat file -> TCP -> socat file, then `sync FILE`
#     nginx    nginx (sendfile on) -> curl -o FILE, then `sync FILE`
#     stdcopy  bench/tcp_copy_baseline.rs: std I/O, 1 MiB buffers, fsync
#   sbcftp-peer get (verified, fsync, rename; the whole command):
#     get1     one uncapped source
#     get2     two sources, each `serve --max-upload-rate 50MB/s`
#     get4     four sources, each `serve --max-upload-rate 50MB/s`
#     slow4    four sources, three at 50MB/s and one at 5MB/s (10x slower)
# Also times `serve`'s hashing of the share folder against b3sum.
#
#   bench/transfer.sh [SIZE_MIB] [RUNS]      (defaults: 1024, 5)
#
# Needs: a release build (done here), socat, nginx, curl, b3sum
# (apt-get install -y socat nginx-light curl b3sum). Everything lives in a
# temp dir that is removed at the end.
set -euo pipefail
SIZE_MIB=${1:-1024}
RUNS=${2:-5}
RATE=50000000         # 50 MB/s
SLOW=$((RATE / 10))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
for tool in socat nginx curl b3sum bc; do
  command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install -y $tool)" >&2; exit 1; }
done
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
  # nginx's worker may still be closing its log.
  rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }
}
trap cleanup EXIT

free_mib=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
[ "$free_mib" -gt $((SIZE_MIB * 4)) ] || { echo "needs $((SIZE_MIB * 4)) MiB free in $WORK" >&2; exit 1; }
mkdir -p "$WORK/share" "$WORK/dl"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$WORK/share/big.bin"
BYTES=$(stat -c %s "$WORK/share/big.bin")
cat "$WORK/share/big.bin" > /dev/null   # page cache, for every contender alike
HASH=$(b3sum --no-names "$WORK/share/big.bin")
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

# Hashing: b3sum vs serve's scan (a fresh cache dir each time).
b3=()
for _ in $(seq "$RUNS"); do
  s=$(now); b3sum "$WORK/share/big.bin" > /dev/null; b3+=("$(since "$s")")
done

# One tracker per case, so each `get` sees exactly that case's holders.
tracker() {  # NAME -> prints URL
  local port=$((20000 + RANDOM % 20000))
  "$TRACKER_BIN" --listen 127.0.0.1:$port --database-url "sqlite://$WORK/$1.db?mode=rwc" \
    > "$WORK/$1.tracker.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break; sleep 0.1; done
  echo "http://127.0.0.1:$port"
}
hash_secs=()
serve() {  # TRACKER IP NAME [serve flags...]
  local t=$1 ip=$2 name=$3; shift 3
  local log=$WORK/$name.log
  "$BIN/sbcftp-peer" --tracker "$t" serve --share "$WORK/share" --listen "$ip:0" \
    --cache-dir "$WORK/cache-$name" "$@" > "$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do grep -qs "registered with the tracker" "$log" && return; sleep 0.1; done
  echo "peer $name did not register" >&2; exit 1
}
T1=$(tracker one); T2=$(tracker two); T4=$(tracker four); TS=$(tracker slow)
serve "$T1" 127.0.0.2 a
# serve registers at once and announces files once hashed: its hashing time
# is from "hashing 1 new or changed file(s)" to the announcement.
for _ in $(seq 600); do grep -qs 'updating the tracker' "$WORK/a.log" && break; sleep 0.1; done
hash_secs+=("$(python3 - "$WORK/a.log" <<'PY'
import sys, datetime
t = {}
for line in open(sys.argv[1]):
    for key in ("hashing 1 new", "updating the tracker"):
        if key in line and key not in t:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
if len(t) == 2:
    print((t["updating the tracker"] - t["hashing 1 new"]).total_seconds())
PY
)")
serve "$T2" 127.0.0.11 b1 --max-upload-rate $RATE
serve "$T2" 127.0.0.12 b2 --max-upload-rate $RATE
for i in 1 2 3 4; do serve "$T4" 127.0.0.2$i c$i --max-upload-rate $RATE; done
for i in 1 2 3; do serve "$TS" 127.0.0.3$i d$i --max-upload-rate $RATE; done
serve "$TS" 127.0.0.34 d4 --max-upload-rate $SLOW

# Every case's holders listed before any download starts.
wait_holders() {  # TRACKER N
  for _ in $(seq 600); do
    n=$(curl -fs "$1/api/v1/files?hash=$HASH" | python3 -c \
      'import json,sys; print(sum(len(c["peers"]) for c in json.load(sys.stdin)["files"]))' 2>/dev/null || echo 0)
    [ "$n" = "$2" ] && return
    sleep 0.1
  done
  echo "$1 never listed $2 holders" >&2; exit 1
}
wait_holders "$T1" 1; wait_holders "$T2" 2; wait_holders "$T4" 4; wait_holders "$TS" 4

# nginx with sendfile, serving the share folder on 127.0.0.5.
NPORT=$((20000 + RANDOM % 20000))
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.5:$NPORT; root $WORK/share; }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fsI "http://127.0.0.5:$NPORT/big.bin" > /dev/null 2>&1 && break; sleep 0.1; done

check() { cmp -s "$1" "$WORK/share/big.bin" || { echo "MISMATCH in $1" >&2; exit 1; }; }
run_socat() {
  local out=$WORK/dl/socat.bin port=$((20000 + RANDOM % 20000))
  rm -f "$out"
  local s; s=$(now)
  socat -u TCP-LISTEN:$port,bind=127.0.0.6,reuseaddr OPEN:"$out",creat,trunc &
  local rx=$!
  # The listener may take a moment to bind; a bounded number of tries.
  local tries=0
  until socat -u FILE:"$WORK/share/big.bin" TCP:127.0.0.6:$port 2> /dev/null; do
    tries=$((tries + 1)); [ $tries -lt 500 ] || { echo "socat never connected" >&2; exit 1; }
    sleep 0.01
  done
  wait $rx; sync "$out"; since "$s"
  check "$out"; rm -f "$out"
}
run_nginx() {
  local out=$WORK/dl/nginx.bin
  rm -f "$out"
  local s; s=$(now)
  curl -fs -o "$out" "http://127.0.0.5:$NPORT/big.bin"; sync "$out"; since "$s"
  check "$out"; rm -f "$out"
}
run_std() {
  rm -f "$WORK/dl/std.bin"
  "$WORK/tcp_copy_baseline" "$WORK/share/big.bin" "$WORK/dl/std.bin" 127.0.0.7 | cut -d' ' -f2
  rm -f "$WORK/dl/std.bin"
}
run_get() {  # TRACKER
  rm -rf "$WORK/dl/get"
  local s; s=$(now)
  "$BIN/sbcftp-peer" --tracker "$1" get "$HASH" --out "$WORK/dl/get" > "$WORK/get.out"
  since "$s"
  check "$WORK/dl/get/big.bin"; rm -rf "$WORK/dl/get"
}

CASES=(socat nginx stdcopy get1 get2 get4 slow4)
declare -A T
for c in "${CASES[@]}"; do T[$c]=""; done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$RUNS"); do
  T[socat]+="$(run_socat) "
  T[nginx]+="$(run_nginx) "
  T[stdcopy]+="$(run_std) "
  T[get1]+="$(run_get "$T1") "
  T[get2]+="$(run_get "$T2") "
  T[get4]+="$(run_get "$T4") "
  T[slow4]+="$(run_get "$TS") "
  echo "round $r/$RUNS done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Resume: a part file holding every other block (a sparse file, as an
# interrupted swarm download leaves it), re-verified by the next `get`.
mkdir -p "$WORK/dl/resume"
PART="$WORK/dl/resume/.big.bin.${HASH:0:8}.sbcftp-part"
python3 - "$WORK/share/big.bin" "$PART" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, 'rb') as f, open(dst, 'wb') as o:
    i = 0
    while True:
        b = f.read(1 << 20)
        if not b: break
        if i % 2 == 0:
            o.seek(i << 20); o.write(b)
        i += 1
PY
"$BIN/sbcftp-peer" --tracker "$T1" --log sbcftp_peer=debug get "$HASH" --out "$WORK/dl/resume"   > /dev/null 2> "$WORK/resume.log"
check "$WORK/dl/resume/big.bin"
RESUME=$(grep -o 'part file re-verified.*' "$WORK/resume.log" | head -1)
# What a sidecar record would cost instead: one atomic rewrite (write,
# fsync, rename, fsync the folder) per verified block.
SIDECAR=$(python3 - "$WORK/dl" "$((BYTES / 1048576))" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
bits = bytearray((n + 7) // 8)
t = time.time()
for i in range(n):
    bits[i // 8] |= 1 << (i % 8)
    tmp = os.path.join(d, 'side.tmp')
    with open(tmp, 'wb') as f:
        f.write(bits); f.flush(); os.fsync(f.fileno())
    os.rename(tmp, os.path.join(d, 'side'))
    fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)
print(f"{time.time() - t:.3f}")
PY
)

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { echo "$BYTES / $1 / 1000000" | bc -l; }
echo "file: $SIZE_MIB MiB; $RUNS interleaved rounds; median shown; load average before: $load_before, after: $load_after"
printf '%-8s %9s %8s   %s\n' case median MB/s "all runs (s)"
declare -A M
for c in "${CASES[@]}"; do
  # shellcheck disable=SC2086
  M[$c]=$(median ${T[$c]})
  printf '%-8s %8.3fs %8.0f   %s\n' "$c" "${M[$c]}" "$(mbps "${M[$c]}")" "${T[$c]}"
done
best_base=$(printf '%s\n' "${M[socat]}" "${M[nginx]}" | sort -g | head -1)
ratio() { echo "$1" | bc -l | xargs printf '%.2f'; }
echo "get1 / faster of socat, nginx : $(ratio "$best_base / ${M[get1]}")  (target >= 0.85)"
echo "get1 / stdcopy                : $(ratio "${M[stdcopy]} / ${M[get1]}")"
echo "get2 / (2 x 50 MB/s)          : $(ratio "$(mbps "${M[get2]}") / 100")  (target >= 0.8)"
echo "get4 / (4 x 50 MB/s)          : $(ratio "$(mbps "${M[get4]}") / 200")  (target >= 0.8)"
echo "slow4 / (3 x 50 + 5 MB/s)     : $(ratio "$(mbps "${M[slow4]}") / 155")  (target >= 0.8)"
H=${hash_secs[0]:-}; X=$(median "${b3[@]}")
if [ -n "$H" ]; then
  printf 'hashing: serve %.3f s (%.0f MB/s), b3sum median %.3f s (%.0f MB/s)\n' \
    "$H" "$(mbps "$H")" "$X" "$(mbps "$X")"
else
  printf 'hashing: serve (not found in its log), b3sum median %.3f s\n' "$X"
fi
echo "resume (every other block in the part file): $RESUME"
echo "a sidecar rewritten atomically per block instead: $SIDECAR s for $((BYTES / 1048576)) blocks"
