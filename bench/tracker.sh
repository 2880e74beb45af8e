#!/usr/bin/env bash
# Tracker benchmark (BENCHMARKS.md, section "Tracker"): builds release, then for
# each backend starts the real tracker binary on a fresh database, runs the load
# generator (tracker/examples/bench_tracker.rs) against it and stops everything.
#
#   bench/tracker.sh [BACKENDS] [-- extra bench_tracker flags]
#   BACKENDS: comma-separated of sqlite,postgres,mariadb (default sqlite,postgres,mariadb)
#
# Only loopback addresses. Temp files and the sbcftp_bench_<random> databases are
# removed at the end (trap). Each backend run is bounded by BENCH_TIMEOUT (default 1200 s).
set -euo pipefail
cd "$(dirname "$0")/.."

backends="${1:-sqlite,postgres,mariadb}"
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
timeout_s="${BENCH_TIMEOUT:-1200}"
port="${BENCH_PORT:-18480}"
my_host="${BENCH_MYSQL_HOST:-127.0.0.1}"

cargo build --release -p sbcftp-tracker --bin sbcftp-tracker --example bench_tracker
bin=target/release/sbcftp-tracker
gen=target/release/examples/bench_tracker

tmp="$(mktemp -d)"
db_name="sbcftp_bench_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
tracker_pid=""
pg_db=""
my_db=""

stop_tracker() {
  if [ -n "$tracker_pid" ] && kill -0 "$tracker_pid" 2>/dev/null; then
    kill -TERM "$tracker_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$tracker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tracker_pid" 2>/dev/null || true
    wait "$tracker_pid" 2>/dev/null || true
  fi
  tracker_pid=""
}
cleanup() {
  stop_tracker
  [ -n "$pg_db" ] && psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $pg_db" >/dev/null 2>&1 || true
  [ -n "$my_db" ] && mysql -h "$my_host" -u root -e "DROP DATABASE IF EXISTS $my_db" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_one() { # name database_url [bench_tracker flags]
  local name="$1" url="$2"
  shift 2
  echo
  echo "################ $name ################"
  # A TTL far longer than the run (nothing is swept), pages of up to 1000,
  # logs at warn (nothing per request), no per-address limits (every
  # simulated peer comes from loopback), no reachability checks (the
  # generated peers listen nowhere; checking them would measure nothing).
  RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --database-url "$url" \
    --peer-ttl 2h --heartbeat-interval 30s --max-page-size 1000 \
    --max-peers-per-ip 0 --max-files-per-ip 0 --requests-per-ip 0 \
    --reachability-check false \
    >"$tmp/$name.log" 2>&1 &
  tracker_pid=$!
  local ok=""
  for _ in $(seq 300); do
    if curl -fsS "http://127.0.0.1:$port/livez" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$tracker_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ok" ]; then echo "tracker did not start:"; cat "$tmp/$name.log"; stop_tracker; return 1; fi
  echo "tracker pid $tracker_pid on $name ($(nproc) cores: load generator and tracker share them)"
  timeout "$timeout_s" "$gen" --tracker "http://127.0.0.1:$port" --tracker-pid "$tracker_pid" "$@" "${extra[@]}" \
    || echo "bench_tracker failed on $name (exit $?)"
  echo "tracker warnings/errors during the run:"; grep -v "^\s*$" "$tmp/$name.log" | tail -n 5 || true
  stop_tracker
}

IFS=',' read -r -a list <<<"$backends"
for b in "${list[@]}"; do
  case "$b" in
    sqlite) run_one sqlite "sqlite://$tmp/bench.db?mode=rwc"; rm -f "$tmp"/bench.db* ;;
    postgres)
      pg_db="$db_name"
      psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $pg_db"
      # This machine's server runs with autovacuum off: VACUUM (ANALYZE) once
      # after loading (what autovacuum does after a bulk insert on a default
      # server). ANALYZE gives the planner statistics (without them it sorts
      # the whole files table for every page); VACUUM sets the visibility map,
      # without which every index-only scan also reads the heap (about twice
      # the CPU per search page).
      run_one postgres "postgres://postgres@127.0.0.1:5432/$pg_db" \
        --after-load-cmd "psql -q -h 127.0.0.1 -U postgres -d $pg_db -c 'VACUUM (ANALYZE)'"
      psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $pg_db"; pg_db="" ;;
    mariadb)
      my_db="$db_name"
      mysql -h "$my_host" -u root -e "CREATE DATABASE $my_db"
      run_one mariadb "mysql://root@$my_host:3306/$my_db" \
        --after-load-cmd "mysql -h $my_host -u root $my_db -e 'ANALYZE TABLE peers, files, file_words' >/dev/null"
      mysql -h "$my_host" -u root -e "DROP DATABASE IF EXISTS $my_db"; my_db="" ;;
    *) echo "unknown backend $b (sqlite, postgres, mariadb)"; exit 2 ;;
  esac
done
