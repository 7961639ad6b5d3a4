#!/usr/bin/env bash
# Build every image recipe under images/ (each images/<name>/build.sh), or the ones named.
#
#   images/build.sh              all recipes
#   images/build.sh container    only images/container/build.sh
#
# Without names, k3s (the K3s VM image) is built only when K3S_BIN names a K3s binary.
# Each recipe is idempotent and cached by the hash of its inputs under $EVE_IMAGE_CACHE
# (default /var/cache/eve-agent/images); it prints what it built or found, and the paths and
# SHA-256 of its outputs, on its last lines.  Recipes use Debian packages only.
set -euo pipefail
cd "$(dirname "$0")"
export EVE_IMAGE_CACHE=${EVE_IMAGE_CACHE:-/var/cache/eve-agent/images}
mkdir -p "$EVE_IMAGE_CACHE"
if [ $# -eq 0 ]; then
    set -- $(for d in */; do [ -x "$d/build.sh" ] && basename "$d"; done)
    if [ -z "${K3S_BIN:-}" ]; then
        echo "== images/k3s: skipped (K3S_BIN is not set; see images/k3s/build.sh)"
        set -- $(printf '%s\n' "$@" | grep -vx k3s)
    fi
fi
for name in "$@"; do
    [ -x "$name/build.sh" ] || { echo "images: no recipe $name" >&2; exit 2; }
    echo "== images/$name"
    "./$name/build.sh"
done
