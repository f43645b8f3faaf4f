#!/usr/bin/env bash
# Bootstrap: installs what the local stack needs (Debian packages, .venv, frontend deps); idempotent.
#
# Every step checks first and does nothing when its result is already in place, so a second
# run takes a few seconds: apt runs only for missing packages, pip only when
# requirements/lock.txt changed, npm only when frontend/package-lock.json changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive
log() { printf 'bootstrap: %s\n' "$*"; }

if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo -n); fi

# --- Debian packages ---------------------------------------------------------------------
# nginx: tests/dicomweb/test_nginx_accel.py runs the README's production configuration in front of gunicorn.
packages=(orthanc orthanc-dicomweb dcmtk postgresql redis-server chromium nginx)
# The venv must be Python 3.11 with ensurepip; Debian splits that into python3.11-venv.
if ! command -v python3.11 >/dev/null || ! python3.11 -c 'import ensurepip, venv' 2>/dev/null; then
    packages+=(python3.11 python3.11-venv)
fi
if [[ -f frontend/package-lock.json ]] && ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" 2>/dev/null | grep -qx 'Status: install ok installed' || missing+=("$pkg")
done

if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    # Keep package scripts from starting system services (system Orthanc, a second
    # PostgreSQL/Redis): the stack runs its own, under var/. An existing policy is respected.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- no system Orthanc -------------------------------------------------------------------
# The Debian orthanc package ships a service on 8042/4242; tenant Orthancs are started per
# tenant by the provisioning driver, and a stray system one would only confuse DICOM tests.
# Never use `service orthanc status|stop` here: the sysv script matches every
# /usr/sbin/Orthanc process by executable, so it would report and kill the tenant Orthancs too.
if [[ -d /run/systemd/system ]]; then
    # systemd tracks the service by its cgroup, so this touches only the packaged service.
    if systemctl is-enabled --quiet orthanc 2>/dev/null || systemctl is-active --quiet orthanc 2>/dev/null; then
        log "disabling the system Orthanc service"
        "${SUDO[@]}" systemctl disable --now orthanc >/dev/null 2>&1 || true
    fi
elif compgen -G '/etc/rc[2-5].d/S*orthanc' >/dev/null; then
    log "disabling the system Orthanc service"
    "${SUDO[@]}" update-rc.d orthanc disable >/dev/null 2>&1 || true
fi
# The sysv service's own pid file, then whatever Orthanc listens on the packaged ports
# (tenant Orthancs use other ports).
system_pids=$(cat /run/orthanc.pid 2>/dev/null || true)
system_pids+=" $(ss -Hltnp '( sport = :8042 or sport = :4242 )' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ' || true)"
for pid in $(printf "%s\n" $system_pids | sort -u); do
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == Orthanc ]]; then
        log "stopping the system Orthanc (pid $pid)"
        "${SUDO[@]}" kill "$pid" || true
    fi
done

# --- Python virtualenv -------------------------------------------------------------------
if [[ -x .venv/bin/python ]] && ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    log ".venv is not Python 3.11; recreating it"
    rm -rf .venv
fi
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv (Python 3.11)"
    python3.11 -m venv .venv
fi
lock_hash=$(sha256sum requirements/lock.txt | cut -d' ' -f1)
stamp=.venv/.readroom-lock.sha256
if [[ $(cat "$stamp" 2>/dev/null) != "$lock_hash" ]]; then
    log "installing requirements/lock.txt into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
    echo "$lock_hash" >"$stamp"
fi

# --- frontend ----------------------------------------------------------------------------
if [[ -f frontend/package-lock.json ]]; then
    # Vite 8 needs Node >= 20.19 (frontend/package.json "engines"); say so plainly rather than fail in the build.
    if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
        log "Node $(node --version) is too old for the viewer build: install Node >= 20.19 (e.g. Debian trixie's nodejs)"
        exit 1
    fi
    npm_hash=$(sha256sum frontend/package-lock.json | cut -d' ' -f1)
    npm_stamp=frontend/node_modules/.readroom-lock.sha256
    if [[ $(cat "$npm_stamp" 2>/dev/null) != "$npm_hash" ]]; then
        log "npm ci in frontend/"
        (cd frontend && npm ci --no-audit --no-fund)
        echo "$npm_hash" >"$npm_stamp"
    fi
fi

log "ok"
