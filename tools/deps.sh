#!/usr/bin/env bash
# Install what eve-agent needs to build, lint and test: Debian packages and the .venv.
#
#   tools/deps.sh            both steps (what `make deps` runs)
#   tools/deps.sh apt        only the Debian packages
#   tools/deps.sh venv       only the virtualenv
#
# Idempotent and quick when nothing changed: packages are checked with dpkg-query and
# `apt-get update` runs only when one is missing; the venv is reinstalled only when
# pyproject.toml (or this script's recipe version) changed, recorded in a stamp file.
set -euo pipefail

cd "$(dirname "$0")/.."

# Bump when the install recipe below changes in a way that needs a reinstall.
RECIPE_VERSION=1
# Debian's Python 3.11: the distro nftables binding (python3-nftables) is built for it.
SYSTEM_PYTHON=/usr/bin/python3
VENV=$(realpath -m "${VENV:-.venv}")
STAMP="$VENV/.eve-deps-stamp"
# pip inside the venv (Debian's 23.0 is too old for current wheels' metadata).
PIP_VERSION=26.3
PIP_FLAGS=(--disable-pip-version-check --progress-bar off)

DEB_PACKAGES=(
    # TPM: software TPM and the TSS the tpm2-pytss binding compiles against
    swtpm swtpm-tools libtss2-dev tpm2-tools
    # VMs
    qemu-system-x86 qemu-utils ovmf libvirt-daemon-system libvirt-dev
    # containers and the local registry
    docker.io docker-registry
    # networking
    nftables python3-nftables dnsmasq iproute2 iputils-ping conntrack
    # guest images
    busybox-static xorriso genisoimage syslinux mtools dosfstools
    # building the venv (C extensions: tpm2-pytss, libvirt-python)
    pkg-config python3-venv python3-dev libffi-dev libssl-dev gcc libc6-dev
    # packages and the node image (make deb, make image; lintian in make lint)
    dpkg-dev debhelper lintian mmdebstrap systemd-container fdisk
    # tools used by the scripts and tests
    sqlite3 curl procps
)

log() { printf '[deps] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

missing_packages() {
    local pkg status
    for pkg in "${DEB_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        case "$status" in
            ii*) ;;
            *) printf '%s\n' "$pkg" ;;
        esac
    done
}

deps_apt() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages: all ${#DEB_PACKAGES[@]} installed"
        return 0
    fi
    log "Debian packages missing: ${missing[*]}"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q)
    as_root "${apt[@]}" update
    as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -ne 0 ]; then
        log "still missing after install: ${missing[*]}"
        return 1
    fi
}

wanted_stamp() {
    printf 'recipe=%s python=%s pyproject=%s\n' "$RECIPE_VERSION" \
        "$("$SYSTEM_PYTHON" -c 'import sys; print(sys.version.split()[0])')" \
        "$(sha256sum pyproject.toml | cut -d' ' -f1)"
}

venv_site_packages() {
    "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

# Debian's nftables binding is not on PyPI. Expose just that package inside the venv
# (not the whole of /usr/lib/python3/dist-packages) with a symlink.
link_nftables() {
    local src=/usr/lib/python3/dist-packages/nftables site
    if [ ! -d "$src" ]; then
        log "$src not found (python3-nftables not installed?)"
        return 1
    fi
    site=$(venv_site_packages)
    if [ "$(readlink "$site/nftables" 2>/dev/null || true)" != "$src" ]; then
        rm -rf "${site:?}/nftables"
        ln -s "$src" "$site/nftables"
        log "linked $src into $site"
    fi
}

# The driver bindings import, and the project itself is installed (found, not imported:
# half-written code elsewhere in the tree must not make `make deps` fail).
VERIFY_PY='
import importlib.util
import nftables, tpm2_pytss, libvirt, docker, pyroute2
for name in ("agent", "controller"):
    assert importlib.util.find_spec(name) is not None, name + " is not installed"
'

verify_venv() {
    # From / so that the source tree in the working directory does not count as installed.
    (cd / && "$VENV/bin/python" -c "$VERIFY_PY") 2>/dev/null
}

venv_is_sane() {
    [ -x "$VENV/bin/python" ] || return 1
    [ -f "$VENV/pyvenv.cfg" ] || return 1
    # Must be made from Debian's /usr/bin/python3, not a pyenv/other interpreter.
    grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" || return 1
    "$VENV/bin/python" -c 'pass' 2>/dev/null
}

deps_venv() {
    if [ ! -x "$SYSTEM_PYTHON" ]; then
        log "$SYSTEM_PYTHON missing: run '$0 apt' first"
        return 1
    fi
    if ! venv_is_sane; then
        log "creating $VENV with $SYSTEM_PYTHON"
        rm -rf "$VENV"
        "$SYSTEM_PYTHON" -m venv "$VENV"
    fi
    local want
    want=$(wanted_stamp)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && link_nftables && verify_venv; then
        log "venv: up to date ($VENV)"
        return 0
    fi
    rm -f "$STAMP"
    log "venv: installing eve-agent[drivers,dev] (pyproject.toml changed or first run)"
    "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -q "pip==$PIP_VERSION"
    "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -e '.[drivers,dev]'
    link_nftables
    if ! verify_venv; then
        log "venv: import check failed:"
        (cd / && "$VENV/bin/python" -c "$VERIFY_PY") || true
        return 1
    fi
    printf '%s' "$want" >"$STAMP"
    log "venv: ready ($VENV)"
}

case "${1:-all}" in
    apt) deps_apt ;;
    venv) deps_venv ;;
    all) deps_apt; deps_venv ;;
    *) echo "usage: $0 [apt|venv|all]" >&2; exit 2 ;;
esac
