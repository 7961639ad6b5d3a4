#!/usr/bin/env bash
# The test container image: a busybox rootfs from Debian's busybox-static, imported into dockerd
# and pushed to the local registry ($EVE_REGISTRY_ADDR, default 127.0.0.1:5000) as
#   <registry>/eve-agent/test-busybox:<input hash>
# Its command prints the environment, then "ready", then sleeps:
#   sh -c 'env; echo ready; exec sleep 1000000'
#
# Cached by the hash of its inputs (this script's text + the busybox-static version apt would
# download) under $EVE_IMAGE_CACHE/container: when the registry still has the manifest the
# cached digest names, nothing is built (well under a second); when the registry lost it, the
# image is built and pushed again.  Runs under an flock, so concurrent runs are safe.
#
# Last line of output: <registry>/eve-agent/test-busybox@sha256:<digest>
# Needs: root (docker socket), dockerd and the registry running (tools/services.sh start), curl.
set -euo pipefail

REGISTRY=${EVE_REGISTRY_ADDR:-127.0.0.1:5000}
REPO=eve-agent/test-busybox
CACHE_ROOT=${EVE_IMAGE_CACHE:-/var/cache/eve-agent/images}
CACHE=$CACHE_ROOT/container
CMD_JSON='["sh","-c","env; echo ready; exec sleep 1000000"]'
MANIFEST_TYPES='application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json'

log() { echo "container: $*" >&2; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

# The version apt would download.  apt-cache takes about half a second here (Debian's docker
# images turn apt's binary cache off), so the answer is kept until apt's lists change.
lists_stamp=$(stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null | sha256sum | cut -c1-16)
version=
if [ -s "$CACHE/.apt-version" ]; then
    read -r stamp cached_version <"$CACHE/.apt-version" || true
    [ "${stamp:-}" = "$lists_stamp" ] && version=${cached_version:-}
fi
if [ -z "$version" ]; then
    version=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')
    if [ -n "$version" ] && [ "$version" != "(none)" ]; then
        echo "$lists_stamp $version" >"$CACHE/.apt-version"
    fi
fi
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    log "apt knows no busybox-static (run apt-get update?)"
    exit 1
fi
hash=$( { cat "$0"; printf 'busybox-static=%s\n' "$version"; } | sha256sum | cut -c1-16)
tag=$REGISTRY/$REPO:$hash
digest_file=$CACHE/$hash.digest

# Does the registry hold this manifest?  $1: sha256:...
registry_has() {
    local code
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -I \
        -H "Accept: $MANIFEST_TYPES" "http://$REGISTRY/v2/$REPO/manifests/$1") || return 1
    [ "$code" = 200 ]
}

if [ -s "$digest_file" ]; then
    digest=$(cat "$digest_file")
    if registry_has "$digest"; then
        log "cached ($hash, busybox-static $version)"
        echo "$REGISTRY/$REPO@$digest"
        exit 0
    fi
    log "registry lost $digest: building again"
    rm -f "$digest_file"
fi

work=$(mktemp -d "$CACHE/.build.XXXXXX")
chmod 0755 "$work"  # apt-get download writes as _apt
trap 'rm -rf "$work"' EXIT

# The .deb, kept in the cache by version so a rebuild does not download it again.
deb_file=$CACHE/busybox-static_${version//:/%3a}.deb
if [ ! -s "$deb_file" ]; then
    (cd "$work" && apt-get download -q "busybox-static=$version" >&2)
    mv "$work"/busybox-static_*.deb "$deb_file"
fi
dpkg-deb -x "$deb_file" "$work/deb"

root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
install -m 0755 "$work/deb/bin/busybox" "$root/bin/busybox"
# `busybox --install -s` into the rootfs, without running anything inside it.
"$root/bin/busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
[ -e "$root/bin/sh" ] || ln -s /bin/busybox "$root/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# Deterministic tar: sorted names, fixed times and owners.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$root" -cf "$work/rootfs.tar" .

docker import \
    --change "CMD $CMD_JSON" \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL org.lfedge.eve-agent.test-image=busybox busybox-static=$version" \
    "$work/rootfs.tar" "$tag" >/dev/null
push_out=$(docker push "$tag" 2>&1) || { echo "$push_out" >&2; exit 1; }
digest=$(printf '%s\n' "$push_out" | sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' | tail -1)
if [ -z "$digest" ]; then
    echo "$push_out" >&2
    log "no digest in docker push's output"
    exit 1
fi
registry_has "$digest" || { log "pushed, but the registry has no $digest"; exit 1; }
echo "$digest" >"$digest_file.tmp"
mv -f "$digest_file.tmp" "$digest_file"
log "built and pushed $tag (busybox-static $version)"
echo "$REGISTRY/$REPO@$digest"
