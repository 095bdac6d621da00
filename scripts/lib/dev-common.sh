# shellcheck shell=bash
# What scripts/dev-up and scripts/dev-down share: messages, the checks that create nothing, and the
# Pulumi engine and state backend they both use. Sourced, never run.

say() { echo "${0##*/}: $*" >&2; }

require_docker() {
  if ! command -v docker >/dev/null 2>&1; then
    say "the docker client is not installed (no \`docker\` on PATH); nothing was created."
    say "  Install Docker Engine 20.10+ (Debian/Ubuntu: apt-get install docker.io), then run again."
    exit 1
  fi
  local problem
  if ! problem=$(docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null); then
    say "no Docker Engine answers (DOCKER_HOST=${DOCKER_HOST:-unset, the local socket}); nothing was created."
    say "  docker info: $(printf '%s' "$problem" | tail -n 1)"
    say "  Start it (as root: scripts/start-dockerd, or your init system) or point DOCKER_HOST at it, then run again."
    exit 1
  fi
}

# Where scripts/install-engine keeps what it builds: its default as root, the user's cache otherwise.
if [ -z "${PULUMI_ENGINE_CACHE:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export PULUMI_ENGINE_CACHE=/var/cache/paper-trading-engine
  else
    export PULUMI_ENGINE_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/paper-trading-engine"
  fi
fi
export PULUMI_SKIP_UPDATE_CHECK=true

find_pulumi() {
  # Sets PULUMI to the CLI: on PATH, else where scripts/install-engine put it without root.
  PULUMI=$(command -v pulumi 2>/dev/null || true)
  if [ -z "$PULUMI" ] && [ -x "$PULUMI_ENGINE_CACHE/bin/pulumi" ]; then
    PULUMI=$PULUMI_ENGINE_CACHE/bin/pulumi
    export PATH="$PULUMI_ENGINE_CACHE/bin:$PATH"   # the language host sits beside the CLI
  fi
  [ -n "$PULUMI" ]
}

providers_installed() {
  # The exact provider versions the program's SDKs ask for (tools/engine/versions.env).
  local versions plugins
  versions=$(dirname "${BASH_SOURCE[0]}")/../../tools/engine/versions.env
  # shellcheck source=tools/engine/versions.env
  source "$versions"
  plugins=$("$PULUMI" plugin ls 2>/dev/null) || return 1
  grep -Eq "^docker +resource +${DOCKER_PROVIDER_VERSION} " <<<"$plugins" \
    && grep -Eq "^random +resource +${RANDOM_PROVIDER_VERSION} " <<<"$plugins"
}

have_go() {
  # GO names the go binary to use (tests point it at nothing); else PATH, else Go's default install.
  local go=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
  [ -x "$go" ] || return 1
  PATH="${go%/*}:$PATH"
  export PATH
}

ensure_venv() {
  # ./venv with requirements.txt (what `pulumi up` runs the program with); re-installed only when it changes.
  local stamp=venv/.runtime-requirements.sha want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ -x venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  if [ ! -x venv/bin/python ]; then
    say "creating ./venv and installing the program's dependencies (under a minute the first time: 11 s measured here)"
    python3 -m venv venv || { say "python3 -m venv failed: install Python 3.11+ with venv (apt-get install python3-venv)"; exit 1; }
  fi
  if ! venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt; then
    say "installing requirements.txt into ./venv failed (output above); nothing was deployed."
    exit 1
  fi
  echo "$want" >"$stamp"
}

pulumi_login() {
  export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
  export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$HOME/.pulumi-local}"
  case "$PULUMI_BACKEND_URL" in
    file://*) mkdir -p "${PULUMI_BACKEND_URL#file://}" ;;
  esac
  "$PULUMI" login --non-interactive "$PULUMI_BACKEND_URL" >/dev/null
}

without_tracebacks() {
  # The engine's output as it comes, with any Python traceback of the program folded into one line
  # (kept in a file): the engine's own diagnostics above it say what failed.
  venv/bin/python -m tools.devinfo tracebacks
}
