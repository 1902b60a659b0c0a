# shellcheck shell=bash
# Shared set-up for scripts/demo and scripts/test: the PostgreSQL server package and a
# virtualenv with the project installed. Safe to run again: it only installs what is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PG_SYNC_VENV:-$ROOT/.venv}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo DEBIAN_FRONTEND=noninteractive "$@"
    else
        echo "pg_sync_assets: root is needed to run: $*" >&2
        echo "run that command as root (or install sudo), then run this script again" >&2
        return 1
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${_PG_SYNC_APT_UPDATED:-}" ]; then
        as_root apt-get update -qq
        _PG_SYNC_APT_UPDATED=1
    fi
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
        return
    fi
    echo "pg_sync_assets: installing the PostgreSQL server package (Debian: postgresql)"
    # The tests and the demo start their own servers in temporary directories; tell
    # Debian not to create and start its default cluster on port 5432.
    apt_install postgresql-common
    as_root sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf
    apt_install postgresql
}

# Installs a Debian package whose post-install script would start a system service
# (redis-server): policy-rc.d says no for the install, so nothing is left running.
apt_install_quietly() {
    local policy=/usr/sbin/policy-rc.d created="" status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        created=1
    fi
    apt_install "$@" || status=$?
    if [ -n "$created" ]; then as_root rm -f "$policy"; fi
    return "$status"
}

# The distributed-steps test's broker; the test starts its own server on a free port.
ensure_redis() {
    if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
        return
    fi
    echo "pg_sync_assets: installing Redis (Debian: redis-server), the test broker for steps on other workers"
    apt_install_quietly redis-server
}

ensure_python() {
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
}

# ensure_project [EXTRAS]: the project installed (editable) into $VENV, re-installed
# only when pyproject.toml changes.
ensure_project() {
    local extras=${1:-}
    ensure_python
    local stamp
    stamp="$VENV/.pg_sync_assets-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)${extras:+-test}"
    if [ ! -f "$stamp" ]; then
        echo "pg_sync_assets: installing the project and its dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${extras}"
        touch "$stamp"
    fi
}
