#!/usr/bin/env bash
# Deployment test: builds the tracker's Docker image and runs the README's
# deployment commands, as written, on a fresh clone, against a real Docker
# engine; then checks what a person deploying it would check.
#
#   bash .ci/deploy-smoke.sh        (as root; .ci/run runs it)
#
# 1. Installs what it needs from Debian's packages (docker.io, docker-compose,
#    mmdebstrap, ...), and starts Debian's dockerd with its own data root, exec
#    root and socket when no engine is running. That engine, its data (images,
#    volumes, BuildKit cache) and its iptables rules are removed at the end.
# 2. Makes the base images that the Dockerfile and the compose files name
#    available: pulled where an image registry answers, otherwise built here
#    as stand-ins (test scaffolding, see .ci/standins/README.md).
# 3. Runs the README's blocks `deploy` (MariaDB compose; then again with
#    `-f docker-compose.postgres.yml`, as the README says) and `deploy-sqlite`
#    (one container) on a fresh clone. With Debian's docker.io + docker-compose
#    (v1), `docker compose` is run as `docker-compose` with
#    DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1, which is the README's
#    translation. The only other changes to the README's lines: the test sets a
#    10-minute peer TTL (a peer registered before `down` must still be there
#    after `up`) and, only if port 8080 is taken, another port.
# 4. Checks, for each deployment: services healthy; the tracker runs as uid
#    10001 with no anonymous volume; every migration applied; the README's curl
#    flow (register, list, search, heartbeat, PATCH, wrong token 403, leave),
#    with the peer recorded under the bridge gateway's address; data survives
#    `down` + `up`; the tracker recovers by itself from a database restart.
# 5. Removes everything it created, on success and on failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s)
say() { printf '[deploy-smoke %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
failure=""
die() { failure=$*; printf 'deploy-smoke: error: %s\n' "$*" >&2; exit 1; }
((EUID == 0)) || die "run as root (it installs packages and may start a Docker engine)"

work=$(mktemp -d /var/tmp/sbcftp-deploy-smoke.XXXXXX)
logs=$work/logs
mkdir -p "$logs" "$work/bin"
clone=$work/sbcftp-deploy-smoke # the compose project is named after this folder
project=""                 # the compose project's name, as compose derived it
engine_ready=0             # a docker client talks to an engine
engine_pid=""              # set when this script started dockerd
engine_root=$work/engine
created_images=()          # images this script pulled or built
compose=()                 # the compose command (v2 plugin or v1)
compose_files_used=()
sqlite_used=0
ip_forward_before=""
new_tables=()              # iptables tables that dockerd created

our_containers() {
  { [ -z "$project" ] || docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker ps -aq --filter 'name=^/sbcftp-tracker$'; } | sort -u
}

# --- clean-up, on success and on failure ---------------------------------------
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0 && engine_ready)); then
    echo "---- deploy-smoke failed; its containers and their last log lines:" >&2
    for c in $(our_containers); do
      echo "---- $(docker inspect -f '{{.Name}} {{.State.Status}} {{.Config.Image}}' "$c"):" >&2
      docker logs --tail 40 "$c" >&2 2>&1
    done
  fi
  if ((engine_ready)); then
    for f in "${compose_files_used[@]}"; do
      (cd "$clone" && "${compose[@]}" -f "$f" down -v --remove-orphans) >>"$logs/cleanup.log" 2>&1
    done
    if ((sqlite_used)); then
      docker rm -f sbcftp-tracker >>"$logs/cleanup.log" 2>&1
      docker volume rm sbcftp >>"$logs/cleanup.log" 2>&1
    fi
    if [ -z "$engine_pid" ]; then # someone else's engine: remove exactly what we made
      docker rmi sbcftp-tracker:latest "${created_images[@]}" >>"$logs/cleanup.log" 2>&1
      say "left in the engine that was already running: its BuildKit cache (docker builder prune removes it)"
    fi
  fi
  if [ -n "$engine_pid" ]; then
    kill -TERM "$engine_pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$engine_pid" 2>/dev/null; then
      echo "deploy-smoke: dockerd did not stop in 60 s; killing it" >&2
      kill -KILL "$engine_pid" 2>/dev/null
      sleep 1
    fi
    ((rc == 0)) || { echo "---- last lines of the engine's log:" >&2; tail -20 "$engine_root/dockerd.log" >&2; }
    # Anything still mounted under the data root (only after a hard kill).
    findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
    [ -f "$work/iptables.before" ] && iptables-restore <"$work/iptables.before"
    if command -v nft >/dev/null && iptables --version | grep -q nf_tables; then
      for t in "${new_tables[@]}"; do nft delete table ip "$t" 2>/dev/null; done
    fi
    ip link show docker0 >/dev/null 2>&1 && ip link delete docker0
    [ -n "$ip_forward_before" ] && echo "$ip_forward_before" >/proc/sys/net/ipv4/ip_forward
    say "stopped the Docker engine it had started, removed its data root (images, volumes, build cache) and its iptables rules"
  fi
  rm -rf "$work"
  if ((rc == 0)); then say "cleaned up"; else say "cleaned up; FAILED (exit $rc): ${failure:-see above}"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------------
need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
[ -x /usr/bin/docker ] || need_apt+=(docker.io)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v git >/dev/null || need_apt+=(git)
command -v curl >/dev/null || need_apt+=(curl)
command -v jq >/dev/null || need_apt+=(jq)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v readelf >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
  say "installing from Debian: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >"$logs/apt.log" 2>&1 \
    || { tail -20 "$logs/apt.log" >&2; die "apt-get install ${need_apt[*]} failed"; }
fi

# --- the docker client ----------------------------------------------------------------
# The README's commands need a client that builds with BuildKit (RUN --mount):
# one with the buildx plugin (Docker's own packages), or Debian's 20.10 client
# with DOCKER_BUILDKIT=1. A newer client without buildx cannot build at all.
client_ok() { # path
  "$1" buildx version >/dev/null 2>&1 && return 0
  local version # "Docker version 20.10.24+dfsg1, build 297e128"
  version=$("$1" --version 2>/dev/null) || return 1
  [[ "$version" =~ version\ ([0-9]+)\. ]] && ((BASH_REMATCH[1] < 23))
}
client=""
for c in "$(command -v docker || true)" /usr/bin/docker; do
  if [ -n "$c" ] && [ -x "$c" ] && client_ok "$c"; then client=$c; break; fi
done
[ -n "$client" ] || die "no docker client here can build with BuildKit (install Debian's docker.io, or buildx)"
ln -sf "$client" "$work/bin/docker"
export PATH="$work/bin:$PATH"
client_version=$(docker --version)

# --- the engine ---------------------------------------------------------------------
if docker version >/dev/null 2>&1; then
  say "using the Docker engine that is already running ($(docker version --format '{{.Server.Version}}'))"
else
  say "no Docker engine is running: starting Debian's dockerd with its own data root under $engine_root"
  mkdir -p "$engine_root/data" "$engine_root/exec"
  # dockerd adds iptables rules (NAT for the build containers); restore the
  # tables as they were afterwards, with filter and nat present so both reset.
  # Tables that did not exist are emptied, then deleted (iptables-nft).
  iptables-save >"$work/iptables.before" 2>/dev/null || true
  if ! grep -q '^\*filter' "$work/iptables.before"; then
    printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' >>"$work/iptables.before"
    new_tables+=(filter)
  fi
  if ! grep -q '^\*nat' "$work/iptables.before"; then
    printf '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n' >>"$work/iptables.before"
    new_tables+=(nat)
  fi
  ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
  dockerd --data-root "$engine_root/data" --exec-root "$engine_root/exec" \
    --pidfile "$engine_root/dockerd.pid" -H "unix://$engine_root/docker.sock" \
    >"$engine_root/dockerd.log" 2>&1 &
  engine_pid=$!
  export DOCKER_HOST="unix://$engine_root/docker.sock"
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$engine_pid" 2>/dev/null || { tail -20 "$engine_root/dockerd.log" >&2; die "dockerd exited"; }
    sleep 1
  done
  docker version >/dev/null 2>&1 || { tail -20 "$engine_root/dockerd.log" >&2; die "dockerd did not answer in 60 s"; }
fi
engine_ready=1
if [ -z "$engine_pid" ]; then
  # Someone's own engine: never touch what is theirs.
  for thing in "image sbcftp-tracker:latest" "container sbcftp-tracker" "volume sbcftp"; do
    if docker "${thing%% *}" inspect "${thing#* }" >/dev/null 2>&1; then
      die "the running Docker engine already has the ${thing%% *} ${thing#* }, which this test would replace and remove"
    fi
  done
  if [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=${clone##*/}")" ]; then
    die "the running Docker engine already runs a compose project ${clone##*/}"
  fi
fi
server_version=$(docker version --format '{{.Server.Version}}')
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
  say "client: $client_version; engine $server_version; compose plugin: README commands as written"
else
  compose=(docker-compose)
  export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
  say "client: $client_version; engine $server_version; docker-compose $(docker-compose version --short 2>/dev/null):" \
      "README's Debian way (docker-compose, DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1)"
fi

# --- a fresh clone ---------------------------------------------------------------------
head=$(git -C "$repo" rev-parse HEAD)
[ -z "$(git -C "$repo" status --porcelain)" ] \
  || say "note: $repo has uncommitted changes; this tests the last commit, $head"
git clone -q "$repo" "$clone"
git -C "$clone" checkout -q --detach "$head"

# --- base images: pulled, or stand-ins built here ------------------------------------------------
# Every image named by a FROM line (ARG defaults filled in) or an `image:`
# line, except the tracker's own.
base_images() {
  local -A args=()
  local kw rest name val img
  while read -r kw rest; do
    case "${kw^^}" in
      ARG) [[ "$rest" == *=* ]] && { name=${rest%%=*}; val=${rest#*=}; args[$name]=$val; } ;;
      FROM)
        img=${rest%% *}
        for name in "${!args[@]}"; do img=${img//"\${$name}"/${args[$name]}}; done
        echo "$img" ;;
    esac
  done <"$clone/Dockerfile"
  sed -n 's/^[[:space:]]*image:[[:space:]]*//p' "$clone"/docker-compose*.yml | grep -v '^sbcftp-tracker'
}
mapfile -t images < <(base_images | sort -u | awk '/^debian:/ {print; next} {rest[++n]=$0} END {for (i = 1; i <= n; i++) print rest[i]}')

standin_debian() { # image, e.g. debian:bookworm-slim
  local suite=${1#debian:} host_suite sources=$work/debian-sources
  suite=${suite%-slim}
  # The image's apt sources are this machine's Debian sources (the mirror that
  # apt uses here), for the wanted release.
  host_suite=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$sources.sources"
    sources=$sources.sources
  else
    grep -E '^deb[[:space:]]' /etc/apt/sources.list >"$sources.list" || true
    sources=$sources.list
  fi
  [ -s "$sources" ] || { echo "error: no Debian apt sources on this machine to build $1 from"; return 1; }
  [ -z "$host_suite" ] || [ "$host_suite" = "$suite" ] || sed -i "s/\b$host_suite\b/$suite/g" "$sources"
  # The official image's slimming (debuerreotype): no docs, man pages or
  # locales; apt keeps no caches; policy-rc.d keeps services from starting.
  # The hooks run on this machine with $1 = the new root (single quotes meant).
  # shellcheck disable=SC2016
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/linda/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='Acquire::Languages "none"' --aptopt='Acquire::GzipIndexes "true"' \
    --aptopt='Apt::AutoRemove::SuggestsImportant "false"' \
    --aptopt='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }' \
    --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""' \
    --customize-hook='printf "#!/bin/sh\nexit 101\n" >"$1/usr/sbin/policy-rc.d" && chmod 0755 "$1/usr/sbin/policy-rc.d"' \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates" && if [ -d /usr/local/share/ca-certificates ]; then find /usr/local/share/ca-certificates -name "*.crt" -exec cp -t "$1/usr/local/share/ca-certificates" {} +; fi' \
    "$suite" "$work/debian.tar" "$sources" || return 1
  docker import --change 'CMD ["bash"]' \
    --change "LABEL org.sbcftp.test-scaffolding=\"stand-in for $1, built by .ci/deploy-smoke.sh with mmdebstrap\"" \
    "$work/debian.tar" "$1" || return 1
  rm -f "$work/debian.tar"
}

standin_rust() { # image, e.g. rust:1.95-slim-bookworm
  local tag=${1#rust:} want sysroot host have ctx rl c release
  want=${tag%%-*}
  release=${tag##*-}
  sysroot=$(rustc --print sysroot)
  host=$(rustc -vV | sed -n 's/^host: //p')
  have=$(rustc -vV | sed -n 's/^release: //p')
  if [[ "$have" != "$want" && "$have" != "$want".* ]]; then
    echo "error: the Dockerfile wants Rust $want, this machine's toolchain is $have: no stand-in for $1 (set ARG RUST_VERSION to match, or reach a registry)"
    return 1
  fi
  # The build context: this machine's rustup and the minimal profile's files
  # (rustc, cargo, rust-std) of its toolchain, listed by the toolchain's own
  # component manifests. Hard links where possible: nothing is copied twice.
  ctx=$work/rust-context
  rl=$ctx/toolchain/lib/rustlib
  mkdir -p "$rl" || return 1
  cp "$clone/.ci/standins/rust/Dockerfile" "$ctx/" || return 1
  cp "$(readlink -f "$(command -v rustup)")" "$ctx/rustup" || return 1
  printf 'config_version = "1"\n' >"$rl/multirust-config.toml"
  for c in rustc cargo rust-std; do
    local manifest=$sysroot/lib/rustlib/manifest-$c-$host
    [ -f "$manifest" ] || { echo "error: $manifest is missing: cannot tell which files make up $c"; return 1; }
    (cd "$sysroot" && sed -n 's/^file://p' "$manifest" \
      | xargs -d '\n' cp -l --parents -t "$ctx/toolchain" 2>/dev/null \
      || sed -n 's/^file://p' "$manifest" | xargs -d '\n' cp --parents -t "$ctx/toolchain") || return 1
    cp "$manifest" "$rl/" || return 1
    echo "$c-$host" >>"$rl/components"
    printf '\n[[components]]\npkg = "%s"\ntarget = "%s"\nis_extension = false\n' "$c" "$host" >>"$rl/multirust-config.toml"
  done
  cp "$sysroot/lib/rustlib/rust-installer-version" "$sysroot/lib/rustlib/multirust-channel-manifest.toml" "$rl/" || return 1
  docker build -t "$1" --build-arg "BASE=debian:$release-slim" \
    --build-arg "TOOLCHAIN=$have-$host" --build-arg "RUST_VERSION=$have" "$ctx" || return 1
  rm -rf "$ctx"
}

release=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' "$clone/Dockerfile")
registry=unknown # becomes yes or no at the first pull
for img in "${images[@]}"; do
  if docker image inspect "$img" >/dev/null 2>&1; then
    say "base image $img: already present"
    continue
  fi
  if [ "$registry" != no ]; then
    # The first pull also probes the registry: bounded to a minute, where an
    # unreachable registry fails within a second (no DNS) or at dockerd's own
    # dial timeout; later pulls get the time a large image needs.
    if timeout "$([ "$registry" = yes ] && echo 900 || echo 60)" docker pull -q "$img" >"$logs/pull.log" 2>&1; then
      registry=yes
      created_images+=("$img")
      say "base image $img: pulled"
      continue
    fi
    [ "$registry" = yes ] && { cat "$logs/pull.log" >&2; die "pulling $img failed"; }
    registry=no
    say "no image registry answers ($(tail -1 "$logs/pull.log" | cut -c1-150)); building stand-ins (test scaffolding, .ci/standins/)"
  fi
  ts=$(date +%s)
  repo_name=${img%%:*}
  case "$repo_name" in
    debian) standin_debian "$img" ;;
    rust) standin_rust "$img" ;;
    *)
      [ -f "$clone/.ci/standins/$repo_name/Dockerfile" ] \
        || die "no image registry, and no stand-in for $img: add one under .ci/standins/$repo_name/"
      docker build -t "$img" --build-arg "BASE=debian:$release-slim" "$clone/.ci/standins/$repo_name"
      ;;
  esac >"$logs/standin-$repo_name.log" 2>&1 || { tail -30 "$logs/standin-$repo_name.log" >&2; die "building the stand-in for $img failed"; }
  created_images+=("$img")
  say "base image $img: stand-in built in $(($(date +%s) - ts)) s"
done

# --- helpers for the checks ---------------------------------------------------------------------
port=8080
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  port=18080
  while (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do port=$((port + 1)); done
  say "port 8080 is taken on this machine: the deployments publish port $port instead"
fi
T=http://127.0.0.1:$port
ttl=600s
envval() { sed -n "s/^$1=//p" "$clone/.env" | tail -1; }
check() { # description, command...: runs the command, fails the test with the description
  local what=$1; shift
  "$@" || die "check failed: $what"
  say "ok: $what"
}

# The README's fenced commands between <!-- NAME:begin --> and <!-- NAME:end -->.
readme_block() {
  awk -v b="<!-- $1:begin -->" -v e="<!-- $1:end -->" '
    {line = $0; sub(/^[ \t]+/, "", line)}   # blocks may be indented in a list
    line == b {on=1; next}
    line == e {on=0}
    on && line ~ /^```/ {fence=!fence; next}
    on && fence && line !~ /^(#|$)/ {print line}
  ' "$clone/README.md"
}

# Runs one README line in the clone, translated as the header says.
run_readme() { # compose-file-or-empty line
  local file=$1 line=$2 shown=$2
  if [ -n "$file" ] && [ "$file" != docker-compose.yml ]; then line=${line//docker compose/docker compose -f $file}; fi
  [ "${compose[*]}" = "docker compose" ] || line=${line//docker compose/docker-compose}
  line=${line//127.0.0.1:8080/127.0.0.1:$port}
  line=${line//-p 8080:8080/-p $port:8080}
  line=${line//docker run -d /docker run -d -e SBCFTP_PEER_TTL=$ttl }
  say "README\$ $shown"
  [ "$line" = "$shown" ] || say "   run as: $line"
  echo "\$ $line" >>"$logs/readme.log"
  (cd "$clone" && eval "$line") >>"$logs/readme.log" 2>&1 \
    || { tail -40 "$logs/readme.log" >&2; die "README command failed: $shown"; }
}

wait_healthy() { # container...
  local c status
  for c in "$@"; do
    for _ in $(seq 1 180); do
      status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}no healthcheck{{end}}' "$c")
      [ "$status" = healthy ] && break
      [ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || die "container $(docker inspect -f '{{.Name}}' "$c") stopped"
      sleep 1
    done
    [ "$status" = healthy ] || die "container $(docker inspect -f '{{.Name}}' "$c") is not healthy after 180 s ($status)"
  done
}

wait_http() { # status url seconds
  local code=""
  for _ in $(seq 1 "$3"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$2" || true)
    [ "$code" = "$1" ] && return 0
    sleep 1
  done
  echo "  $2 answered $code, not $1, within $3 s" >&2
  return 1
}

json_is() { # description, jq filter that must be true, json
  jq -e "$2" >/dev/null <<<"$3" || { echo "  unexpected answer: $3" >&2; die "check failed: $1"; }
  say "ok: $1"
}

# Every request of the test and of the README's lines is bounded in time.
curl() { command curl --max-time 15 "$@"; }

hash=6667692419a688694160ae6211a20c46ed39a40873f06eff847d740378068f14
peer_id="" token=""

# The README's curl flow, up to the wrong token; the peer stays registered.
curl_flow() { # expected address of the registering host, as the tracker sees it
  local gw=$1 out code
  out=$(curl -fsS "$T/healthz")
  json_is "/healthz answers ok" '.status == "ok"' "$out"
  out=$(curl -fsS -X POST "$T/api/v1/peers" -H 'Content-Type: application/json' \
    -d "{\"port\": 44444, \"files\": [{\"name\": \"hello-copy.txt\", \"size\": 17, \"hash\": \"$hash\"}]}")
  json_is "register: recorded under the bridge gateway's address ($gw:44444)" \
    ".addr == \"$gw:44444\" and (.token | length) > 0 and (.peer_id | length) > 0" "$out"
  peer_id=$(jq -r .peer_id <<<"$out")
  token=$(jq -r .token <<<"$out")
  out=$(curl -fsS "$T/api/v1/peers?limit=1000")
  json_is "list peers: the new peer is online" "any(.peers[]; .peer_id == \"$peer_id\" and .file_count == 1)" "$out"
  out=$(curl -fsS "$T/api/v1/files?q=hello-copy&limit=50")
  json_is "search by name: its file, held by it" \
    "any(.files[]; .hash == \"$hash\" and any(.peers[]; .peer_id == \"$peer_id\"))" "$out"
  out=$(curl -fsS "$T/api/v1/files/$hash")
  json_is "one content: names and holders" ".names == [\"hello-copy.txt\"] and any(.peers[]; .peer_id == \"$peer_id\")" "$out"
  out=$(curl -fsS -X POST "$T/api/v1/peers/$peer_id/heartbeat" -H "Authorization: Bearer $token")
  json_is "heartbeat with the token" '.heartbeat_interval_secs > 0 and .ttl_secs > 0' "$out"
  out=$(curl -fsS -X PATCH "$T/api/v1/peers/$peer_id/files" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"add\": [{\"name\": \"notes.txt\", \"size\": 17, \"hash\": \"$hash\"}], \"remove\": [\"hello-copy.txt\"]}")
  json_is "PATCH files: one added, one removed" '.file_count == 1' "$out"
  out=$(curl -fsS "$T/api/v1/peers/$peer_id/files?limit=100")
  json_is "the peer's files after PATCH" '[.files[].name] == ["notes.txt"]' "$out"
  code=$(curl -s -o "$work/body" -w '%{http_code}' -X POST "$T/api/v1/peers/$peer_id/heartbeat" \
    -H "Authorization: Bearer wrong")
  check "a wrong token is refused with 403 and a problem document" \
    test "$code" = 403 -a "$(jq -r .status "$work/body")" = 403
}

still_there() { # what happened
  local out
  out=$(curl -fsS "$T/api/v1/peers/$peer_id")
  json_is "after $1: the peer is still there" '.file_count == 1' "$out"
  out=$(curl -fsS "$T/api/v1/peers/$peer_id/files?limit=100")
  json_is "after $1: its files are still there" '[.files[].name] == ["notes.txt"]' "$out"
  out=$(curl -fsS -X POST "$T/api/v1/peers/$peer_id/heartbeat" -H "Authorization: Bearer $token")
  json_is "after $1: its token still works" '.ttl_secs > 0' "$out"
}

leave() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$T/api/v1/peers/$peer_id" -H "Authorization: Bearer $token")
  check "leave: DELETE answers 204" test "$code" = 204
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$T/api/v1/peers/$peer_id/heartbeat" -H "Authorization: Bearer $token")
  check "after leaving, a heartbeat answers 404" test "$code" = 404
}

check_tracker_container() { # container, expected mounts (Type:Name:Destination, space-separated)
  local uid mounts
  uid=$(docker exec "$1" awk '/^Uid:/ {print $2}' /proc/1/status)
  check "the tracker process runs as uid 10001, not root (uid $uid)" test "$uid" = 10001
  mounts=$(docker inspect -f '{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}} {{end}}' "$1")
  check "the tracker container has no anonymous volume (mounts: ${mounts:-none})" test "${mounts% }" = "$2"
}

expected_migrations() { # migrations folder
  find "$clone/migrations/$1" -name '*.sql' -printf '%f\n' | sed 's/_.*//; s/^0*//' | sort -n | paste -sd' '
}

gateway_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}' "$1"; }

# --- the image ---------------------------------------------------------------------------------------
image_checks() {
  local bin=$work/sbcftp-tracker c
  check "the image declares no VOLUME" test "$(docker image inspect -f '{{json .Config.Volumes}}' sbcftp-tracker:latest)" = null
  check "the image's user is 10001:10001" test "$(docker image inspect -f '{{.Config.User}}' sbcftp-tracker:latest)" = 10001:10001
  c=$(docker create sbcftp-tracker:latest)
  docker cp "$c:/usr/local/bin/sbcftp-tracker" "$bin" >/dev/null
  docker rm "$c" >/dev/null
  check "the binary is stripped (no .symtab, no .debug_* sections)" bash -c "! readelf -S '$bin' | grep -Eq '\\.symtab|\\.debug_'"
  image_mb=$(($(docker image inspect -f '{{.Size}}' sbcftp-tracker:latest) / 1000000))
  binary_mb=$(($(stat -c %s "$bin") / 1000000))
  say "image sbcftp-tracker:latest: $image_mb MB; binary $binary_mb MB"
}

# --- compose deployments ----------------------------------------------------------------------------------
compose_deployment() { # compose file, migrations folder, the database's volume in the compose file
  local file=$1 kind=$2 line db tr gw vols ts started
  local -a lines
  mapfile -t lines < <(readme_block deploy)
  ((${#lines[@]} >= 3)) || die "README.md has no deploy block between <!-- deploy:begin --> and <!-- deploy:end -->"
  say "=== $file ($kind) ==="
  compose_files_used+=("$file")
  rm -f "$clone/.env"
  docker volume ls -q | sort >"$work/volumes.before"
  for line in "${lines[@]}"; do
    if [[ "$line" == *"docker compose up"* ]]; then
      if [ -z "$(envval DB_PASSWORD)" ] || [ -z "$(envval DB_ROOT_PASSWORD)" ]; then
        die "after the README's lines before \`up\`, .env still has an empty password"
      fi
      check ".env is readable by its owner only" test "$(stat -c %a "$clone/.env")" = 600
      sed -i "s/^SBCFTP_PEER_TTL=.*/SBCFTP_PEER_TTL=$ttl/; s/^TRACKER_PORT=.*/TRACKER_PORT=$port/" "$clone/.env"
      ts=$(date +%s)
      run_readme "$file" "$line"
      say "up --build took $(($(date +%s) - ts)) s"
      [ -n "${build_secs:-}" ] || build_secs=$(($(date +%s) - ts))
      db=$(cd "$clone" && "${compose[@]}" -f "$file" ps -q db)
      tr=$(cd "$clone" && "${compose[@]}" -f "$file" ps -q tracker)
      if [ -z "$db" ] || [ -z "$tr" ]; then die "compose did not create both services"; fi
      project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$tr")
      wait_healthy "$db" "$tr"
      say "ok: both services healthy, $(($(date +%s) - ts)) s after up"
    else
      run_readme "$file" "$line"
    fi
  done
  [ -n "${image_mb:-}" ] || image_checks
  check_tracker_container "$tr" ""
  local want have user pw name
  want=$(expected_migrations "$kind")
  user=$(envval DB_USER); pw=$(envval DB_PASSWORD); name=$(envval DB_NAME)
  if [ "$kind" = mysql ]; then
    have=$(docker exec "$db" mariadb -u"$user" -p"$pw" "$name" -N -e \
      'SELECT version FROM _sqlx_migrations WHERE success ORDER BY version' | paste -sd' ')
  else
    have=$(docker exec "$db" psql -U "$user" -d "$name" -tAc \
      'SELECT version FROM _sqlx_migrations WHERE success ORDER BY version' | paste -sd' ')
  fi
  check "migrations applied: [$have], files: [$want]" test "$have" = "$want"
  gw=$(gateway_of "$tr")
  curl_flow "$gw"

  (cd "$clone" && "${compose[@]}" -f "$file" down) >>"$logs/compose.log" 2>&1
  check "down removed the containers" test -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project")"
  (cd "$clone" && "${compose[@]}" -f "$file" up -d) >>"$logs/compose.log" 2>&1 || die "up -d after down failed"
  db=$(cd "$clone" && "${compose[@]}" -f "$file" ps -q db)
  tr=$(cd "$clone" && "${compose[@]}" -f "$file" ps -q tracker)
  wait_healthy "$db" "$tr"
  still_there "down and up"

  started=$(docker inspect -f '{{.State.StartedAt}}' "$tr")
  (cd "$clone" && "${compose[@]}" -f "$file" stop db) >>"$logs/compose.log" 2>&1
  check "with the database stopped, /healthz answers 503" wait_http 503 "$T/healthz" 30
  (cd "$clone" && "${compose[@]}" -f "$file" start db) >>"$logs/compose.log" 2>&1
  wait_healthy "$db"
  check "the database is back: /healthz answers 200 again" wait_http 200 "$T/healthz" 60
  check "the tracker recovered by itself (same process, not restarted)" \
    test "$(docker inspect -f '{{.State.StartedAt}}' "$tr")" = "$started"
  still_there "a database restart"
  leave

  vols=$(docker volume ls -q | sort | comm -13 "$work/volumes.before" - | paste -sd' ')
  check "the only new volume is the database's named volume ($vols)" test "$vols" = "${project}_$3"
  (cd "$clone" && "${compose[@]}" -f "$file" down -v) >>"$logs/compose.log" 2>&1
  compose_files_used=()
  rm -f "$clone/.env"
}

sqlite_deployment() {
  local line tr gw have want
  local -a lines
  mapfile -t lines < <(readme_block deploy-sqlite)
  ((${#lines[@]} >= 2)) || die "README.md has no deploy-sqlite block"
  say "=== single SQLite container ==="
  docker container inspect sbcftp-tracker >/dev/null 2>&1 && die "a container named sbcftp-tracker exists already"
  docker volume inspect sbcftp >/dev/null 2>&1 && die "a volume named sbcftp exists already"
  sqlite_used=1
  for line in "${lines[@]}"; do run_readme "" "$line"; done
  wait_healthy sbcftp-tracker
  say "ok: the container is healthy"
  check_tracker_container sbcftp-tracker "volume:sbcftp:/var/lib/sbcftp"
  mkdir -p "$work/sqlite"
  docker cp sbcftp-tracker:/var/lib/sbcftp/. "$work/sqlite/" >/dev/null
  have=$(sqlite3 "$work/sqlite/sbcftp-tracker.db" 'SELECT version FROM _sqlx_migrations WHERE success ORDER BY version' | paste -sd' ')
  want=$(expected_migrations sqlite)
  check "migrations applied: [$have], files: [$want]" test "$have" = "$want"
  gw=$(gateway_of sbcftp-tracker)
  curl_flow "$gw"
  docker rm -f sbcftp-tracker >/dev/null
  for line in "${lines[@]}"; do
    [[ "$line" == "docker run "* ]] && run_readme "" "$line"
  done
  wait_healthy sbcftp-tracker
  still_there "removing the container and running it again on the volume"
  leave
  docker rm -f sbcftp-tracker >/dev/null
  docker volume rm sbcftp >/dev/null
  sqlite_used=0
}

compose_deployment docker-compose.yml mysql db-data
compose_deployment docker-compose.postgres.yml postgres pg-data
sqlite_deployment

say "passed: image $image_mb MB (binary $binary_mb MB), first build (up --build) ${build_secs} s, whole test $(($(date +%s) - t0)) s"
