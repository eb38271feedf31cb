#!/usr/bin/env bash
# Prepare this machine for `make demo` and `make test`, from nothing:
#   1. the Python venv .venv with the pinned tools of pyproject.toml (re-made when it changes),
#   2. a running Docker engine (Debian/Ubuntu + root: the distribution's docker.io),
#   3. debootstrap, which builds the Debian test-host images, and restic, which the backup
#      module's unit tests drive for real (both from the distribution's archive),
#   4. the collections of requirements.yml (from the pinned ansible bundle; Galaxy only if missing).
# Idempotent and quick when everything is already there. The venv also holds the hub
# packages (extra `hub`), so the spawner's unit tests run against the real JupyterHub.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_ready=""
apt_install() {
  command -v apt-get >/dev/null || { echo "no apt-get here: install $* yourself" >&2; exit 1; }
  if [ -z "$apt_ready" ]; then as_root apt-get update -qq; apt_ready=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. Python venv
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "Creating the Python venv .venv (pinned tools from pyproject.toml)"
  python3 -m venv .venv || { apt_install python3-venv && python3 -m venv .venv; }
  .venv/bin/pip install --quiet --upgrade pip
  # Byte-compiled on all cores instead of pip's one, without the collections' modules and
  # tests (9 500 of the 20 000 files): modules run on the managed hosts (their source is
  # sent there). Everything the controller imports is compiled: a build machine may set
  # PYTHONDONTWRITEBYTECODE, so what is left out is compiled again at every import.
  .venv/bin/pip install --quiet --no-compile -e '.[dev,hub]'
  .venv/bin/python -m compileall -q -j 0 -x '/ansible_collections/.*/(plugins/modules|tests)/' \
    .venv/lib >/dev/null
  echo "$want" > "$stamp"
fi

# 2. Docker engine
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    log "Installing the distribution's Docker engine"
    apt_install docker.io
  fi
  log "Starting the Docker engine"
  if [ -d /run/systemd/system ]; then
    as_root systemctl start docker
  else
    mkdir -p .cache
    as_root nohup dockerd >.cache/dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "the Docker engine did not come up (see .cache/dockerd.log)" >&2; exit 1; }
fi

# 3. debootstrap, for the Debian images (debian12, debian13, ...)
case "${MOLECULE_DISTRO:-debian12}" in
  debian*)
    if ! command -v debootstrap >/dev/null; then
      log "Installing debootstrap"
      apt_install debootstrap
    fi
    ;;
esac

# restic: tests/unit/test_moodle_backup.py backs up and restores with the real program.
if ! command -v restic >/dev/null; then
  log "Installing restic (for the backup module's unit tests)"
  apt_install restic
fi

# 4. Collections
.venv/bin/python testbed/check_collections.py requirements.yml
