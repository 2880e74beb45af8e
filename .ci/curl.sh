#!/usr/bin/env bash
# Replays the README's curl section top to bottom, in one shell, against a
# running tracker with the quick start's peers (.ci/quickstart.sh calls it
# while they run), so the section cannot rot.
#
# The commands are the `$ ` lines of the console blocks between
# `<!-- curl:begin -->` and `<!-- curl:end -->` (a line ending in `\` goes on).
# Ids, tokens, times and counts differ from run to run, so an answer is
# checked against the README's by what must not differ:
# - JSON: the same shape (the set of key paths, array indices ignored) and the
#   same values of the keys that carry a status or the data we sent (status,
#   title, size, name, names, file_count, heartbeat_interval_secs, ttl_secs);
# - text: every line shown is printed (numbers ignored);
# - nothing shown (an assignment): exit status 0, and each VAR= assigned is
#   neither empty nor "null".
# SBCFTP_CURL_TRACKER=URL replaces the section's `T=` (another tracker).
# shellcheck disable=SC2016  # the $ in generated commands and jq programs are literal
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/curl-replay.XXXX)
trap 'rm -rf "$work"' EXIT

# Split the section into numbered commands and their expected output.
awk -v dir="$work" '
  /<!-- curl:begin -->/ {on=1; next}
  /<!-- curl:end -->/   {on=0}
  !on {next}
  /^```/ {fence=!fence; cont=0; next}
  !fence {next}
  cont { print >> (dir "/" n ".cmd"); cont = ($0 ~ /\\$/); next }
  /^\$ / { n++; sub(/^\$ /, ""); print > (dir "/" n ".cmd"); printf "" > (dir "/" n ".want"); cont = ($0 ~ /\\$/); next }
  n { print >> (dir "/" n ".want") }
  END { print n > (dir "/count") }
' README.md
count=$(cat "$work/count")
if ((count < 10)); then
  echo "error: README.md has no curl section between the curl markers" >&2
  exit 1
fi

# One shell runs every command, so variables carry over.
{
  echo 'set -u'
  for i in $(seq 1 "$count"); do
    cmd=$(cat "$work/$i.cmd")
    if [[ $cmd == T=* && -n ${SBCFTP_CURL_TRACKER:-} ]]; then
      cmd="T=$SBCFTP_CURL_TRACKER"
    fi
    printf '{\n%s\n} >%q 2>&1; echo $? >%q\n' "$cmd" "$work/$i.got" "$work/$i.rc"
    for var in $(grep -oE '(^|[[:space:]])[A-Z_]+=' "$work/$i.cmd" | tr -d ' =' || true); do
      printf '[ -n "${%s:-}" ] && [ "${%s}" != null ] || echo "%s is empty" >>%q\n' \
        "$var" "$var" "$var" "$work/$i.got"
      printf '[ -n "${%s:-}" ] && [ "${%s}" != null ] || echo 1 >%q\n' "$var" "$var" "$work/$i.rc"
    done
  done
} >"$work/replay.sh"
bash "$work/replay.sh"

shape='[paths | map(if type == "number" then 0 else . end)] | unique'
facts='[paths(scalars) as $p
        | select(any($p[]; IN("status", "title", "size", "name", "names", "file_count",
                             "heartbeat_interval_secs", "ttl_secs")))
        | [($p | map(if type == "number" then 0 else . end)), getpath($p)]] | unique'
numbers() { tr -d '\r' | sed -E 's/[0-9]+/N/g'; }

failed=0
for i in $(seq 1 "$count"); do
  cmd=$(head -n1 "$work/$i.cmd")
  want=$(cat "$work/$i.want")
  got=$(cat "$work/$i.got")
  why=
  if [ "$(cat "$work/$i.rc")" != 0 ]; then
    why="exit status $(cat "$work/$i.rc")"
  elif [ -z "$want" ]; then
    :
  elif jq -e . >/dev/null 2>&1 <<<"$want"; then
    if ! jq -e . >/dev/null 2>&1 <<<"$got"; then
      why="not JSON"
    elif [ "$(jq -c "$shape" <<<"$want")" != "$(jq -c "$shape" <<<"$got")" ]; then
      why="another shape: want $(jq -c "$shape" <<<"$want"), got $(jq -c "$shape" <<<"$got")"
    elif [ "$(jq -c "$facts" <<<"$want")" != "$(jq -c "$facts" <<<"$got")" ]; then
      why="other values: want $(jq -c "$facts" <<<"$want"), got $(jq -c "$facts" <<<"$got")"
    fi
  else
    while IFS= read -r line; do
      if ! numbers <<<"$got" | grep -Fxq -- "$(numbers <<<"$line")"; then
        why="no line like: $line"
        break
      fi
    done <<<"$want"
  fi
  if [ -n "$why" ]; then
    failed=$((failed + 1))
    printf 'curl.sh: FAILED [%d] $ %s\n  %s\n  got: %s\n' "$i" "$cmd" "$why" "$got" >&2
  else
    printf 'curl.sh: ok [%d] $ %.100s\n' "$i" "$cmd"
  fi
done
if ((failed)); then
  echo "curl.sh: $failed of $count commands did not answer as README.md shows" >&2
  exit 1
fi
echo "curl.sh: OK ($count commands answered as README.md shows)"
