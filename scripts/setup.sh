#!/usr/bin/env bash
# runbox setup: one command to set everything up and then serve, or test.
#
#   scripts/setup.sh serve   install what is missing, start the Docker engine if none answers,
#                            build the sandbox images, build and run `runbox serve`
#   scripts/setup.sh test    the same setup, then the whole test suite
#
# Idempotent: a second run reuses the engine, the packages and every up-to-date image.
# Needs root (it installs Debian packages and starts dockerd) and the Rust toolchain.
set -euo pipefail

mode="${1:-}"
case "$mode" in
  serve|test) ;;
  *) echo "usage: $0 serve|test" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs packages and starts the Docker engine), e.g. sudo $0 $mode"
command -v cargo >/dev/null || fail "cargo not found: install the Rust toolchain (https://rustup.rs) first"

# 1. Debian packages: the engine, gVisor (the runsc runtime) and debootstrap (for the base
#    image when no registry is used).
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v runsc >/dev/null || missing+=(runsc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
# The tests run published clients (npm piston-client) with Node, and the playground in
# Debian's chromium (driven by playwright-core from npm; no browser download).
if [ "$mode" = test ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  python3 -m ensurepip --version >/dev/null 2>&1 || missing+=(python3-venv)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # The nodes suite runs several runbox nodes on a Redis of its own (Debian's redis-server).
  command -v redis-server >/dev/null || missing+=(redis-server)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (Debian packages; chromium alone is a few hundred MB)"
  apt-get update -qq || fail "apt-get update failed: check the network and /etc/apt/sources.list"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
else
  say "docker.io, runsc and debootstrap are installed"
fi

# 1b. Register gVisor with the engine as the runtime "runsc" (sandbox.runtime chooses it).
#     Its own network stays off (--network=none) and it applies runbox's seccomp profile
#     inside the sandbox (--oci-seccomp). An existing daemon.json is never overwritten.
daemon_json=/etc/docker/daemon.json
runsc_registered=0
if [ ! -f "$daemon_json" ]; then
  mkdir -p /etc/docker
  printf '{\n  "runtimes": {\n    "runsc": { "path": "%s", "runtimeArgs": ["--network=none", "--oci-seccomp"] }\n  }\n}\n' \
    "$(command -v runsc)" >"$daemon_json"
  say "registered runsc in $daemon_json"
  runsc_registered=1
elif ! grep -q '"runsc"' "$daemon_json"; then
  say "warning: $daemon_json has no runsc runtime; gVisor stays unavailable until it is added:"
  echo '  "runtimes": { "runsc": { "path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--oci-seccomp"] } }'
fi

# 2. The engine: reuse one that answers, otherwise start dockerd in the background.
if docker info >/dev/null 2>&1; then
  say "Docker engine answers ($(docker version --format '{{.Server.Version}}'))"
  if [ "$runsc_registered" -eq 1 ] && [ -f /var/run/docker.pid ]; then
    # A running engine reads its runtimes again on SIGHUP.
    kill -HUP "$(cat /var/run/docker.pid)" && sleep 1
  fi
else
  log=/var/log/runbox-dockerd.log
  say "starting dockerd (log: $log)"
  # A pid file left by an engine that no longer runs would stop dockerd from starting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || fail "dockerd did not come up within 60 s; see $log"
  say "Docker engine started ($(docker version --format '{{.Server.Version}}'))"
fi

# 3. Build runbox and the sandbox images (unchanged images are not rebuilt).
profile_flag=()
binary=target/debug/runbox
if [ "$mode" = serve ]; then
  profile_flag=(--release)
  binary=target/release/runbox
fi
say "building runbox"
cargo build "${profile_flag[@]}" --locked --quiet
say "building sandbox images (the first time takes a few minutes)"
"$binary" images build || fail "image build failed (see above); check the network to the Debian mirror"

# 3b. The browser playground (web/, bundled by Vite into web/dist, which runbox serves at /).
#     Without npm runbox still serves the API, and / says how to build the page.
if command -v npm >/dev/null; then
  say "building the browser playground (web/: npm ci, vite build)"
  npm ci --prefix web --no-audit --no-fund --loglevel=error
  npm run --prefix web --silent build -- --logLevel warn
else
  say "npm not found: the browser playground is not built (/ says how to build it)"
fi

if [ "$mode" = serve ]; then
  say "starting runbox on ${RUNBOX_LISTEN:-127.0.0.1:8080}"
  exec "$binary" serve
fi

# 4. Tests: unit tests and the integration suite against the real engine and images, under
#    runc; then the language, limit, hardening and adversarial suites again under gVisor.
say "installing the published clients the tests run (tests/clients: npm piston-client and playwright-core, PyPI judge0)"
npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
[ -x tests/clients/venv/bin/python ] || python3 -m venv tests/clients/venv
tests/clients/venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
say "running the test suite (runc)"
# The browser's checks run on their own afterwards: chromium beside the suite's floods and
# compiles would take the CPU that their timing-sensitive readers need.
cargo test --locked -- --skip browser:: --skip cluster:: --skip nodes::
say "running the nodes suite (several runbox processes on one Redis of its own: the hop, a node killed and stopped, Redis restarted empty, one rate limit over three nodes)"
cargo test --locked --test it -- nodes::
say "starting two more Docker engines for the cluster suite (scripts/engines.sh: one in its own network namespace, one over mutual TLS on 127.0.0.1)"
trap 'scripts/engines.sh stop --purge >/dev/null 2>&1 || true' EXIT
RUNBOX_TEST_ENGINES=$(scripts/engines.sh start)
export RUNBOX_TEST_ENGINES
cluster_config=(RUNBOX_CLUSTER__ENGINES="[{id=\"local\", host=\"unix:///var/run/docker.sock\"}, ${RUNBOX_TEST_ENGINES#[}")
for engine in e1 e2; do
  say "copying the python image to engine $engine (save | load keeps its id)"
  env "${cluster_config[@]}" "$binary" images copy --to "$engine" python >/dev/null
done
say "running the cluster suite (three engines)"
cargo test --locked --test it -- cluster::
scripts/engines.sh stop --purge
trap - EXIT
say "running the playground in Debian's chromium (tests/clients/playground.mjs)"
cargo test --locked --test it -- browser::
say "running the benchmarks' unit tests (feature bench: not part of the service build)"
cargo test --locked --quiet --features bench --lib bench::
# The suite above ran with reused sandboxes (sandbox.reuse = "nested", the default): the
# hostile and limit suites again with a fresh container per job, the other mode.
say "running the limit, hardening, adversarial, live and compile cache suites with a fresh container per job (sandbox.reuse = fresh)"
RUNBOX_SANDBOX__REUSE=fresh cargo test --locked --test it -- \
  limits:: hardening:: adversarial:: live:: compile_cache::
if docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
  say "running the language, limit, hardening, adversarial, Piston, Judge0 and compile cache suites under gVisor (runsc)"
  RUNBOX_SANDBOX__RUNTIME=runsc cargo test --locked --test it -- \
    languages:: limits:: hardening:: adversarial:: piston:: judge0:: dialects:: compile_cache::
else
  fail "the engine has no runsc runtime; see $daemon_json"
fi
say "building runbox's own image and starting it once"
cargo build --release --locked --quiet
docker build -q -t runbox/server:ci . >/dev/null || fail "docker build of runbox's image failed"
server=$(docker run -d -p 127.0.0.1::8080 \
  -v /var/run/docker.sock:/var/run/docker.sock \
  --group-add "$(stat -c %g /var/run/docker.sock)" \
  -e RUNBOX_POOL__ENABLED=false -e RUNBOX_SESSIONS__OWNER=image-ci \
  runbox/server:ci)
trap 'docker rm -f "$server" >/dev/null 2>&1 || true' EXIT
port=$(docker port "$server" 8080/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 30); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 1
done
answer=$(curl -sf "http://127.0.0.1:$port/run" -H 'content-type: application/json' \
  -d '{"language":"python","code":"print(6*7)"}') || fail "the image's server did not answer a run"
case "$answer" in
  *'"stdout":"42\n"'*) ;;
  *) fail "the image's server answered: $answer" ;;
esac
# (Read whole first: `curl | grep -q` fails under pipefail when grep stops reading early.)
page=$(curl -sf "http://127.0.0.1:$port/") || fail "the image's server does not answer at /"
case "$page" in
  *'<title>runbox playground</title>'*) ;;
  *) fail "the image's server does not serve the playground at /" ;;
esac

docker stop "$server" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "$server")" = 0 ] || fail "the image's server did not exit 0 on SIGTERM"
docker rm "$server" >/dev/null
say "runbox's image ran a job as $(docker run --rm --entrypoint id runbox/server:ci -un) and stopped cleanly"
say "checking that no runbox container is left"
for _ in $(seq 1 20); do
  left=$(docker ps -aq --filter label=runbox.managed=true | wc -l)
  [ "$left" -eq 0 ] && break
  sleep 1
done
if [ "$left" -ne 0 ]; then
  docker ps -a --filter label=runbox.managed=true >&2
  fail "$left runbox container(s) left behind after the tests"
fi
volumes=$(docker volume ls -q --filter label=runbox.managed=true | wc -l)
[ "$volumes" -eq 0 ] || fail "$volumes runbox volume(s) left behind after the tests"
# Sandboxed programs run as uid 65534 (a session's keeper as 65533): under runc they are host
# processes, and under gVisor the sandbox itself runs as 65534. None may outlive the tests.
stray=0
for _ in $(seq 1 20); do
  stray=$(pgrep -u 65533,65534 | wc -l || true)
  [ "$stray" -eq 0 ] && break
  sleep 1
done
if [ "$stray" -ne 0 ]; then
  ps -o pid,user,etime,args -u 65533,65534 >&2
  fail "$stray sandbox process(es) left on the host after the tests"
fi
say "all tests passed; no container, volume or sandbox process left behind"
