#!/usr/bin/env bash
# Runs the README's quick start exactly as written, so it cannot rot.
#
# The commands are read from README.md between `<!-- quickstart:begin -->` and
# `<!-- quickstart:end -->`. Lines a person runs in their own terminal (the
# tracker, `serve`) run in the background here, and the script waits until
# each is ready (the tracker answers /healthz; the tracker lists the new peer).
# `cargo test --workspace` is skipped: .ci/run has just run it. Then, while
# the tracker and peers still run, .ci/curl.sh replays the curl section.
set -euo pipefail
cd "$(dirname "$0")/.."
tracker=http://127.0.0.1:8080

mapfile -t lines < <(awk '
  /<!-- quickstart:begin -->/ {on=1; next}
  /<!-- quickstart:end -->/   {on=0}
  on && /^```/ {fence=!fence; next}
  on && fence && $0 !~ /^[[:space:]]*(#|$)/ {print}
' README.md)
if ((${#lines[@]} < 5)); then
  echo "error: README.md has no quick-start block between the quickstart markers" >&2
  exit 1
fi

[ ! -e sbcftp-tracker.db ] || { echo "error: ./sbcftp-tracker.db exists; remove it first" >&2; exit 1; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf demo sbcftp-tracker.db sbcftp-tracker.db-shm sbcftp-tracker.db-wal
}
trap cleanup EXIT

peers_online() { curl -fsS "$tracker/api/v1/peers?limit=1000" | jq '.peers | length'; }
wait_until() { # deadline-seconds pid description command...
  local secs=$1 pid=$2 what=$3; shift 3
  for _ in $(seq 1 "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "error: $what exited early; its log:" >&2; cat "$log" >&2; return 1; }
    sleep 1
  done
  echo "error: $what not ready after ${secs}s; its log:" >&2; cat "$log" >&2; return 1
}

n=0
for line in "${lines[@]}"; do
  n=$((n + 1))
  case "$line" in
    "cargo test --workspace"*)
      echo "quickstart\$ $line   (skipped: .ci/run runs the test suite itself)"
      ;;
    "cargo run "*sbcftp-tracker*)
      log=$(mktemp /tmp/quickstart-tracker.XXXX.log)
      echo "quickstart\$ $line   (in the background; log $log)"
      bash -c "exec $line" >"$log" 2>&1 &
      pids+=($!)
      # The first run compiles the release build: allow for it.
      wait_until 1500 "$!" "the tracker" curl -fsS "$tracker/healthz"
      ;;
    *" serve "*)
      log=$(mktemp /tmp/quickstart-peer.XXXX.log)
      before=$(peers_online)
      echo "quickstart\$ $line   (in the background; log $log)"
      bash -c "exec $line" >"$log" 2>&1 &
      pids+=($!)
      # shellcheck disable=SC2016
      wait_until 60 "$!" "the peer" bash -c '[ "$(curl -fsS '"$tracker"'/api/v1/peers?limit=1000 | jq ".peers | length")" -gt '"$before"' ]'
      ;;
    *)
      echo "quickstart\$ $line"
      bash -c "$line"
      ;;
  esac
done

got=$(cat demo/bob/Downloads/hello.txt)
[ "$got" = "hello from alice" ] || { echo "error: downloaded file holds '$got'" >&2; exit 1; }
echo "quickstart: OK (${n} commands; bob downloaded alice's file byte for byte)"

# The README's curl section, against this tracker and these peers.
bash .ci/curl.sh
