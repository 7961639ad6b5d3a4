#!/usr/bin/env bash
# The K3s VM image (`K3S_BIN=/path/to/k3s make images-k3s`): the disk of a cluster member's K3s
# VM (docs/clusters.md, docs/clusters-node.md).  Debian 12 from Debian's archive only
# (mmdebstrap), cloud-init with the NoCloud datasource, and the K3s binary the user supplies
# (none can be downloaded on the machines this project is built on).
#
#   K3S_BIN=/path/to/k3s [K3S_AIRGAP_IMAGES=/path/to/k3s-airgap-images-amd64.tar.zst] \
#       images/k3s/build.sh
#
# K3S_BIN              the k3s binary (https://github.com/k3s-io/k3s/releases: `k3s`, for
#                      amd64); installed as /usr/local/bin/k3s with the kubectl, crictl and ctr
#                      links K3s's installer makes.  Required.
# K3S_AIRGAP_IMAGES    optional: K3s's air-gap images (k3s-airgap-images-amd64.tar.zst from the
#                      same release), copied to /var/lib/rancher/k3s/agent/images/, so the
#                      cluster needs no registry.
# K3S_DISK_GIB         the disk's virtual size (default 8); the root file system fills it.
#
# What the VM runs: Debian's cloud kernel, systemd, cloud-init (our /etc/cloud/cloud.cfg:
# datasource NoCloud only, as the agent gives every VM a NoCloud seed; bootcmd, write_files,
# growpart/resizefs, hostname, ca-certs, runcmd, per-boot/instance scripts, power_state; no
# default user, no SSH server, root's password locked, no getty: nobody logs in), ifupdown with DHCP on the first NIC (cloud-init's fallback
# network), what K3s needs on Debian (iptables, nftables, conntrack, ipset, iproute2, mount,
# util-linux, kmod, ca-certificates, curl).  K3s's units as its installer writes them,
# k3s.service (`k3s server`) and k3s-agent.service (`k3s agent`), both disabled: the agent's
# cloud-config (agent/reconcile/cluster.py) writes /etc/rancher/k3s/config.yaml and enables the
# one of its role.  The serial console (ttyS0) gets the kernel, systemd and cloud-init output.
#
# The disk: qcow2, an MBR with one ext4 partition (root, /boot inside it) from 1 MiB to the end,
# booted by BIOS with GRUB (core.img in the gap after the MBR, made with grub-mkimage: no
# grub-install, no mounts), as the agent boots VM apps (SeaBIOS, `pc` machine, virtio disk;
# agent/drivers/domainxml.py).  cloud-init grows the partition and file system when the volume
# is larger than the image.
#
# Outputs, in $EVE_IMAGE_CACHE/k3s-<input hash>/ (default cache /var/cache/eve-agent/images):
#   disk.qcow2    the disk; give it to the controller as a content tree (`cluster create
#                 --k3s-image`)
#   image.json    what is in it: the K3s binary's SHA-256, the kernel, the package versions
#   SHA256SUMS    of disk.qcow2
# and $EVE_IMAGE_CACHE/k3s -> that directory.  The last line is `<sha256>  <path of disk.qcow2>`.
#
# Two layers, each cached by the hash of its inputs:
#   k3s-base-<hash>.tar   mmdebstrap (minbase) of the packages; inputs: the package list, the
#                         suites, every package's candidate version, this recipe's base part.
#                         About 3-4 minutes.
#   k3s-<hash>/           the base, the K3s binary (and air-gap images), the image's own files,
#                         GRUB and the disk; inputs: the base's hash, this whole script, the K3s
#                         binary's (and the air-gap images') SHA-256, the disk size.  Under a
#                         minute.
# The three newest of each are kept.  Idempotent; an flock serialises concurrent builds.
# Root is needed (mmdebstrap's root mode, owners in the tree).  Needs: mmdebstrap, sfdisk
# (fdisk), mkfs.ext4 (e2fsprogs), qemu-img (qemu-utils); all in tools/deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${EVE_IMAGE_CACHE:-/var/cache/eve-agent/images}
log() { printf '[k3s] %s\n' "$*" >&2; }

if [ -z "${K3S_BIN:-}" ]; then
    log "K3S_BIN is not set: the K3s VM image needs a K3s binary, which cannot be downloaded here."
    log "Download \`k3s\` (amd64) from https://github.com/k3s-io/k3s/releases on a machine that can,"
    log "optionally k3s-airgap-images-amd64.tar.zst of the same release, then run:"
    log "  K3S_BIN=/path/to/k3s [K3S_AIRGAP_IMAGES=/path/to/k3s-airgap-images-amd64.tar.zst] make images-k3s"
    exit 2
fi
[ -f "$K3S_BIN" ] && [ -r "$K3S_BIN" ] || { log "K3S_BIN=$K3S_BIN is not a readable file"; exit 2; }
airgap=${K3S_AIRGAP_IMAGES:-}
if [ -n "$airgap" ]; then
    [ -f "$airgap" ] && [ -r "$airgap" ] ||
        { log "K3S_AIRGAP_IMAGES=$airgap is not a readable file"; exit 2; }
    case $airgap in
    *.tar | *.tar.gz | *.tgz | *.tar.zst | *.tar.bz2 | *.tar.lz4) ;;
    *) log "K3S_AIRGAP_IMAGES: K3s imports only .tar, .tar.gz, .tar.zst, .tar.bz2 or .tar.lz4 files"; exit 2 ;;
    esac
fi
DISK_GIB=${K3S_DISK_GIB:-8}
[[ $DISK_GIB =~ ^[0-9]+$ ]] && [ "$DISK_GIB" -ge 2 ] ||
    { log "K3S_DISK_GIB must be a whole number of GiB, at least 2"; exit 2; }
[ "$(id -u)" -eq 0 ] || { log "needs root (mmdebstrap's root mode, owners in the tree)"; exit 2; }
mkdir -p "$CACHE"

exec 9>"$CACHE/.k3s.lock"
flock 9

# --- layer 1: the base system -----------------------------------------------------------------
# Only this block's text counts for the base's hash (a change below it does not rebuild it).
SUITES=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
    "deb http://deb.debian.org/debian bookworm-updates main"
)
PACKAGES=(
    linux-image-cloud-amd64 initramfs-tools grub-pc-bin systemd systemd-sysv udev dbus kmod
    cloud-init cloud-guest-utils ifupdown isc-dhcp-client netbase
    iptables nftables conntrack ipset iproute2 mount util-linux e2fsprogs procps
    ca-certificates curl
)
# Every package's candidate version (the kernel's versioned package too), as apt knows them.
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { log "cannot resolve linux-image-cloud-amd64's kernel (apt-get update?)"; exit 1; }
versions=$(apt-cache policy "${PACKAGES[@]}" "$kernel_pkg" |
    awk '/^[^ ]/ {p = $1} /Candidate:/ {print p $2}')
if printf '%s\n' "$versions" | grep -q '(none)$'; then
    log "packages without a candidate (apt-get update?):"
    printf '%s\n' "$versions" | grep '(none)$' >&2
    exit 1
fi
base_recipe=$(sed -n '/^# --- layer 1/,/^# --- layer 2/p' "$0")
base_hash=$(printf '%s\n' "$base_recipe" "${SUITES[@]}" "$versions" | sha256sum | cut -c1-16)
base_tar=$CACHE/k3s-base-$base_hash.tar
if [ ! -s "$base_tar" ]; then
    log "base system $base_hash: mmdebstrap (${#PACKAGES[@]} packages)"
    start=$SECONDS
    # minbase: no Recommends, no documentation.  The kernel's postinst makes the initramfs.
    mmdebstrap --variant=minbase --mode=root --format=tar --quiet \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$base_tar.partial" "${SUITES[@]}" >"$CACHE/.k3s-base.log" 2>&1 ||
        { log "mmdebstrap failed:"; tail -30 "$CACHE/.k3s-base.log" >&2; rm -f "$base_tar.partial"; exit 1; }
    mv "$base_tar.partial" "$base_tar"
    log "base system made in $((SECONDS - start)) s ($(du -m "$base_tar" | cut -f1) MiB)"
fi
touch "$base_tar"

# --- layer 2: the image -----------------------------------------------------------------------
k3s_sum=$(sha256sum <"$K3S_BIN" | cut -d' ' -f1)
airgap_sum=""
[ -z "$airgap" ] || airgap_sum=$(sha256sum <"$airgap" | cut -d' ' -f1)
hash=$( {
    printf 'base=%s\nk3s=%s\nairgap=%s %s\ndisk=%s\n' "$base_hash" "$k3s_sum" \
        "${airgap:+$(basename "$airgap")}" "$airgap_sum" "$DISK_GIB"
    sha256sum <"$0"
} | sha256sum | cut -c1-16)
out=$CACHE/k3s-$hash

report() {
    ln -sfn "k3s-$hash" "$CACHE/k3s.tmp" && mv -T "$CACHE/k3s.tmp" "$CACHE/k3s"
    touch "$out"
    # Keep the three newest of each layer.
    ls -1dt "$CACHE"/k3s-base-*.tar 2>/dev/null | tail -n +4 | xargs -r rm -f
    ls -1dt "$CACHE"/k3s-[0-9a-f]*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
    printf '%s  %s\n' "$(cut -d' ' -f1 "$out/SHA256SUMS")" "$out/disk.qcow2"
}

if [ -f "$out/SHA256SUMS" ] && [ -f "$out/image.json" ] && [ -f "$out/disk.qcow2" ]; then
    log "cached: $out (k3s $k3s_sum)"
    report
    exit 0
fi

log "building $out (k3s $k3s_sum, base $base_hash)"
start=$SECONDS
work=$(mktemp -d "$CACHE/.k3s-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$base_tar"
uuid_of() { printf '%s' "$hash/$1" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }
root_uuid=$(uuid_of root)
kver=$(basename "$(ls -1d "$root"/lib/modules/* | LC_ALL=C sort -V | tail -1)")
for f in "boot/vmlinuz-$kver" "boot/initrd.img-$kver"; do
    [ -f "$root/$f" ] || { log "missing /$f in the base"; exit 1; }
done
CMDLINE="root=UUID=$root_uuid rw console=ttyS0,115200 systemd.show_status=error"

# K3s, as its installer lays it out.
install -D -m 0755 "$K3S_BIN" "$root/usr/local/bin/k3s"
for link in kubectl crictl ctr; do ln -sfn k3s "$root/usr/local/bin/$link"; done
if [ -n "$airgap" ]; then
    install -D -m 0644 "$airgap" "$root/var/lib/rancher/k3s/agent/images/$(basename "$airgap")"
fi
mkdir -p "$root/etc/rancher/k3s" "$root/etc/eve"
chmod 0755 "$root/etc/rancher" "$root/etc/rancher/k3s"
unit() {
    local name=$1 role=$2 type=$3
    cat >"$root/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=$type
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/$name.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s $role
UNIT
    chmod 0644 "$root/etc/systemd/system/$name.service"
}
unit k3s server notify
unit k3s-agent agent exec

# cloud-init: its configuration replaced by ours (Debian's runs modules for SSH keys, locales,
# passwords, a default user with sudo, package upgrades: none of which has a place here; its
# locale module fails on a minbase system).  NoCloud only (no probing of other clouds' metadata
# addresses).  Its output reaches the serial console (shipped as the app's logs).
cat >"$root/etc/cloud/cloud.cfg" <<'CFG'
# The K3s VM of an eve-agent cluster member (images/k3s/build.sh): the agent's NoCloud seed only;
# no default user, no SSH, no passwords (nobody logs in); the modules a member's user data uses.
datasource_list: [NoCloud, None]
disable_root: true
preserve_hostname: false
cloud_init_modules:
  - migrator
  - seed_random
  - bootcmd
  - write-files
  - growpart
  - resizefs
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - ca-certs
cloud_config_modules:
  - runcmd
cloud_final_modules:
  - write-files-deferred
  - scripts-vendor
  - scripts-per-once
  - scripts-per-boot
  - scripts-per-instance
  - scripts-user
  - final-message
  - power-state-change
system_info:
  distro: debian
  paths:
    cloud_dir: /var/lib/cloud/
    templates_dir: /etc/cloud/templates/
CFG
# The network: cloud-init writes its fallback (DHCP on the first NIC) for ifupdown.
[ -f "$root/etc/network/interfaces" ] ||
    printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' >"$root/etc/network/interfaces"
grep -q 'interfaces.d' "$root/etc/network/interfaces" ||
    printf '\nsource /etc/network/interfaces.d/*\n' >>"$root/etc/network/interfaces"
printf 'UUID=%s / ext4 rw,errors=remount-ro 0 1\n' "$root_uuid" >"$root/etc/fstab"
printf 'k3s-vm\n' >"$root/etc/hostname"
# Nothing of the build machine: no DNS settings, a machine id made at the first boot.
: >"$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# No login anywhere: root's password stays locked, no getty, no SSH server (none installed).
systemctl --root="$root" --quiet mask getty@.service serial-getty@.service console-getty.service \
    systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer
systemctl --root="$root" --quiet enable networking.service
passwd_field=$(awk -F: '$1 == "root" {print $2}' "$root/etc/shadow")
case $passwd_field in '*' | '!'* | '') ;; *) log "root has a password in the base"; exit 1 ;; esac
[ -n "$passwd_field" ] || sed -i 's/^root::/root:*:/' "$root/etc/shadow"
rm -f "$root/var/log/"*.log "$root/var/cache/ldconfig/aux-cache"
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin

# GRUB for BIOS: a core.img (embedded config: find the root by its UUID) in the gap after the
# MBR, modules and grub.cfg in /boot/grub.
mkdir -p "$root/boot/grub"
cp -a "$root/usr/lib/grub/i386-pc" "$root/boot/grub/"
cat >"$root/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "K3s VM ($kver)" {
    linux /boot/vmlinuz-$kver $CMDLINE
    initrd /boot/initrd.img-$kver
}
CFG
# The early config runs in GRUB's rescue parser, as grub-install's does: search.fs_uuid (the
# `search` command is another module), and the serial console first, so its errors show there.
cat >"$root/tmp/early.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search.fs_uuid $root_uuid root
set prefix=(\$root)/boot/grub
CFG
chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub \
    biosdisk part_msdos ext2 search_fs_uuid normal linux configfile echo test serial terminal
mv "$root/tmp/core.img" "$work/core.img"
rm -f "$root/tmp/early.cfg"
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -lt 2047 ] || { log "core.img is too large ($core_sectors sectors)"; exit 1; }

# --- the disk: MBR, one ext4 partition from 1 MiB to the end ----------------------------------
export E2FSPROGS_FAKE_TIME=$(git -C "$REPO" log -1 --format=%ct -- "$0" 2>/dev/null || echo 0)
part_mib=$((DISK_GIB * 1024 - 1))
mkfs.ext4 -q -F -L k3s-root -U "$root_uuid" -E "hash_seed=$(uuid_of root-seed),lazy_itable_init=1" \
    -d "$root" "$work/root.img" "${part_mib}M" >/dev/null
disk=$work/disk.raw
truncate -s "${DISK_GIB}G" "$disk"
printf 'label: dos\nlabel-id: 0x%s\nunit: sectors\nstart=2048, type=83, bootable\n' \
    "$(uuid_of disk | cut -c1-8)" | sfdisk --quiet --no-reread --no-tell-kernel "$disk" >/dev/null
# boot.img's code (its first 440 bytes: the disk signature and the partition table stay, as
# grub-bios-setup keeps them), core.img from sector 1 (where boot.img loads it from, as
# grub-mkimage's diskboot expects without grub-bios-setup).
dd if="$root/usr/lib/grub/i386-pc/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
dd if="$work/root.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
rm "$work/root.img"

mkdir "$work/out"
qemu-img convert -q -f raw -O qcow2 -c "$disk" "$work/out/disk.qcow2"
rm "$disk"
python3 - "$kver" "$k3s_sum" "${airgap:+$(basename "$airgap")}" "$airgap_sum" "$base_hash" \
    "$DISK_GIB" "$CMDLINE" "$versions" >"$work/out/image.json" <<'PY'
import json
import sys

kver, k3s, airgap, airgap_sum, base, disk_gib, cmdline, versions = sys.argv[1:]
packages = dict(line.split(":", 1) for line in versions.splitlines())
print(json.dumps({
    "kernel": kver, "k3s_sha256": k3s, "airgap_images": airgap or None,
    "airgap_sha256": airgap_sum or None, "base": base, "disk_gib": int(disk_gib),
    "cmdline": cmdline, "packages": packages,
}, indent=2))
PY
(cd "$work/out" && sha256sum disk.qcow2 >SHA256SUMS)
chmod 0755 "$work/out"
chmod 0644 "$work/out"/*
rm -rf "$out"
mv "$work/out" "$out"
log "built $out in $((SECONDS - start)) s ($(du -m "$out/disk.qcow2" | cut -f1) MiB qcow2, ${DISK_GIB} GiB virtual)"
report
