#!/usr/bin/env bash
# The node disk image (`make image`): Debian 12 with the agent's package, booted by UEFI, laid
# out as an EVE node's disk.  From Debian packages only (mmdebstrap, Debian's archive) plus the
# package of this tree (packaging/build-deb.sh).
#
# GPT, partitions named as on EVE (a 1 MiB alignment, sizes in MiB):
#   1 "EFI System"  vfat, the ESP: systemd-boot as EFI/BOOT/BOOTX64.EFI (no NVRAM entry
#                   needed), slot A's kernel and initramfs in EFI/eve/a/, loader/entries/eve-a.conf
#                   with `root=PARTLABEL=IMGA` (the slot's root by partition name), console ttyS0
#   2 "IMGA"        ext4, root slot A: the system (mkfs.ext4 -d from a directory: no mounts)
#   3 "IMGB"        root slot B, the same size, empty until a base OS update writes it
#   4 "CONFIG"      vfat labelled CONFIG, mounted read-only at /config: what the installer
#                   writes (server, root-certificate.pem, onboard.cert.pem, onboard.key.pem,
#                   soft_serial); empty in the image (tools/node_vm.py writes a node's own)
#   5 "P3"          ext4 with the encrypt feature (the vault is fscrypt in it), /persist
#
# Outputs, in $EVE_IMAGE_CACHE/node-<input hash>/ (default cache /var/cache/eve-agent/images):
#   disk.raw      the disk (sparse); boot it with tools/node_vm.py, or write it to a disk
#   layout.json   the partitions (name, start and size in bytes), the kernel command line,
#                 the package versions in it
#   SHA256SUMS    of disk.raw, as built
# and $EVE_IMAGE_CACHE/node -> that directory.  The last line is `<sha256>  <path of disk.raw>`.
#
# Two layers, each cached by the hash of its inputs:
#   node-base-<hash>.tar   mmdebstrap (minbase) of the kernel, systemd, systemd-boot's EFI
#                          binary, the guest agent and every package the agent's package depends
#                          on; inputs: the package list (with the .deb's Depends), the suites,
#                          the candidate versions of the kernel and systemd, this recipe's base
#                          part.  About 2-3 minutes; made again when one of those changes.
#   node-<hash>/           the base unpacked, the .deb installed (dpkg -i in systemd-nspawn: its
#                          dependencies are there already, no network), the image's own files,
#                          the partitions and the disk; inputs: the base's hash, the .deb's
#                          SHA-256, the files of images/node/.  About a minute.
# A cached image is found in well under a second (plus the package check).  The two newest of
# each are kept.  Idempotent; an flock serialises concurrent builds.
#
# Root is needed for mmdebstrap (root mode) and systemd-nspawn (owners and device nodes of the
# system); nothing is mounted (the filesystems are made from directories: mkfs.ext4 -d,
# mkfs.vfat + mcopy; the GPT with sfdisk on a file).
# Needs: mmdebstrap, systemd-nspawn (systemd-container), sfdisk (fdisk), mkfs.ext4 (e2fsprogs),
# mkfs.vfat (dosfstools), mcopy (mtools), dpkg-deb; all in tools/deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${EVE_IMAGE_CACHE:-/var/cache/eve-agent/images}
mkdir -p "$CACHE"
log() { printf '[node] %s\n' "$*" >&2; }

SUITES=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)
# The system around the agent.  qemu-guest-agent answers only on QEMU's virtio-serial channel
# (started by udev when that port exists, so it does nothing on hardware): the host's tests
# read `systemctl is-active eve-agent` through it; there is no login on the node.
BASE_PACKAGES=(
    linux-image-amd64 initramfs-tools systemd systemd-sysv udev dbus kmod
    systemd-boot-efi qemu-guest-agent iproute2 procps
)
ESP_MIB=160
CONFIG_MIB=16
PERSIST_MIB=2048
# panic=10: a kernel that panics reboots, so a base OS trial that panics ends in the old slot.
CMDLINE="root=PARTLABEL=IMGA rw console=ttyS0,115200 systemd.gpt_auto=0 systemd.show_status=1 panic=10"

# --- the agent's package ----------------------------------------------------------------------
deb_lines=$(bash "$REPO/packaging/build-deb.sh")
agent_deb=$(printf '%s\n' "$deb_lines" | awk '$2 ~ /\/eve-agent_[^\/]*\.deb$/ {print $2}')
deb_sum=$(printf '%s\n' "$deb_lines" | awk '$2 ~ /\/eve-agent_[^\/]*\.deb$/ {print $1}')
[ -f "$agent_deb" ] || { log "packaging/build-deb.sh gave no eve-agent package"; exit 1; }
agent_version=$(dpkg-deb -f "$agent_deb" Version)
# Its dependencies go into the base (the first of each set of alternatives).
mapfile -t agent_depends < <(dpkg-deb -f "$agent_deb" Depends | tr ',' '\n' |
    sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep -v '^$' | LC_ALL=C sort -u)

exec 9>"$CACHE/.node.lock"
flock 9

candidate() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }

# --- layer 1: the base system -----------------------------------------------------------------
# Only this block's text counts for the base's hash (a change below it does not rebuild it).
base_recipe=$(sed -n '/^# --- layer 1/,/^# --- layer 2/p' "$0")
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9].*-amd64$/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { log "cannot resolve linux-image-amd64's kernel (apt-get update?)"; exit 1; }
base_hash=$( {
    printf '%s\n' "$base_recipe" "${SUITES[@]}" "${BASE_PACKAGES[@]}" -- "${agent_depends[@]}"
    printf '%s=%s\n' "$kernel_pkg" "$(candidate "$kernel_pkg")" systemd "$(candidate systemd)"
} | sha256sum | cut -c1-16)
base_tar=$CACHE/node-base-$base_hash.tar
if [ ! -s "$base_tar" ]; then
    log "base system $base_hash: mmdebstrap (${#BASE_PACKAGES[@]} packages + the agent's ${#agent_depends[@]} dependencies)"
    start=$SECONDS
    includes=$(IFS=,; echo "${BASE_PACKAGES[*]},${agent_depends[*]}")
    # minbase: no Recommends, no documentation; the initramfs is made by the kernel's
    # postinst (MODULES=most, so it boots on hardware too).
    mmdebstrap --variant=minbase --mode=root --format=tar --quiet --include="$includes" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$base_tar.partial" "${SUITES[@]}" >"$CACHE/.node-base.log" 2>&1 ||
        { log "mmdebstrap failed:"; tail -30 "$CACHE/.node-base.log" >&2; exit 1; }
    mv "$base_tar.partial" "$base_tar"
    log "base system made in $((SECONDS - start)) s ($(du -m "$base_tar" | cut -f1) MiB)"
fi
touch "$base_tar"

# --- layer 2: the image -----------------------------------------------------------------------
hash=$( {
    printf 'base=%s\ndeb=%s\ncmdline=%s\n' "$base_hash" "$deb_sum" "$CMDLINE"
    (cd "$HERE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
} | sha256sum | cut -c1-16)
out=$CACHE/node-$hash

report() {
    ln -sfn "node-$hash" "$CACHE/node.tmp" && mv -T "$CACHE/node.tmp" "$CACHE/node"
    touch "$out"
    # Keep the two newest of each layer.
    ls -1dt "$CACHE"/node-base-*.tar 2>/dev/null | tail -n +3 | xargs -r rm -f
    ls -1dt "$CACHE"/node-[0-9a-f]*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
    printf '%s  %s\n' "$(cut -d' ' -f1 "$out/SHA256SUMS")" "$out/disk.raw"
}

if [ -f "$out/SHA256SUMS" ] && [ -f "$out/layout.json" ] && [ -f "$out/disk.raw" ]; then
    log "cached: $out ($agent_version)"
    report
    exit 0
fi

log "building $out (eve-agent $agent_version, base $base_hash)"
start=$SECONDS
work=$(mktemp -d "$CACHE/.node-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$base_tar"

# The image's own files (rootfs/ beside this script).
cp -a --no-preserve=ownership "$HERE/rootfs/." "$root/"
chmod 0644 "$root/etc/fstab" "$root/etc/hostname" "$root/etc/systemd/network/"*.network \
    "$root/etc/systemd/system/eve-trial-guard.service"
chmod 0755 "$root/usr/local/lib/eve/trial-guard"
# The image's version (base OS updates compare it with the controller's base_os_version) and
# the ESP's mount point (the agent writes a new slot's kernel and boot entry there).
printf '%s\n' "$agent_version" >"$root/etc/eve-release"
mkdir -p "$root/boot/efi"
# Nothing of the build machine: no DNS settings, and a machine id made at each node's first boot.
: >"$root/etc/resolv.conf"
echo "uninitialized" >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# The agent's package: every dependency is in the base already, so dpkg alone installs it (its
# postinst enables the service and makes /config and /persist).  networkd brings the port up
# (DHCP); nothing asks for a root password at the first boot (root's stays locked: no login);
# apt's daily timers are off (a node is updated through its controller, never from the net).
cp "$agent_deb" "$root/var/tmp/eve-agent.deb"
systemd-nspawn --quiet --register=no --keep-unit --private-network --directory="$root" \
    sh -euc 'dpkg -i /var/tmp/eve-agent.deb
        systemctl enable systemd-networkd.service eve-trial-guard.service
        systemctl mask systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer' \
    >"$work/dpkg.log" 2>&1 ||
    { log "installing the agent failed:"; tail -20 "$work/dpkg.log" >&2; exit 1; }
rm "$root/var/tmp/eve-agent.deb"
[ -L "$root/etc/systemd/system/multi-user.target.wants/eve-agent.service" ] ||
    { log "eve-agent.service is not enabled after dpkg -i"; exit 1; }
rm -f "$root/var/log/"*.log "$root/var/cache/ldconfig/aux-cache"
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin

# --- the ESP: systemd-boot and slot A's kernel ------------------------------------------------
kver=$(basename "$(ls -1d "$root"/lib/modules/* | LC_ALL=C sort -V | tail -1)")
for f in "boot/vmlinuz-$kver" "boot/initrd.img-$kver" usr/lib/systemd/boot/efi/systemd-bootx64.efi; do
    [ -f "$root/$f" ] || { log "missing /$f in the root"; exit 1; }
done
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/eve/a" "$esp/loader/entries"
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$root/boot/vmlinuz-$kver" "$esp/EFI/eve/a/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$esp/EFI/eve/a/initrd.img"
printf 'default eve-a.conf\ntimeout 0\neditor no\n' >"$esp/loader/loader.conf"
cat >"$esp/loader/entries/eve-a.conf" <<EOF
title   eve-agent node, slot A ($agent_version)
linux   /EFI/eve/a/vmlinuz
initrd  /EFI/eve/a/initrd.img
options $CMDLINE
EOF

# --- partitions (files) and the disk ----------------------------------------------------------
# Filesystem identities from the input hash: a rebuild of the same inputs gives the same ones.
uuid_of() { printf '%s' "$hash/$1" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }
export E2FSPROGS_FAKE_TIME=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)

mkfs.vfat -n EFI -i "$(uuid_of esp | cut -c1-8)" -C "$work/esp.img" $((ESP_MIB * 1024)) >/dev/null
(cd "$esp" && find . -mindepth 1 -type d | LC_ALL=C sort | sed 's|^\./||' |
    while read -r d; do mmd -i "$work/esp.img" "::$d"; done)
(cd "$esp" && find . -type f | LC_ALL=C sort | sed 's|^\./||' |
    while read -r f; do mcopy -i "$work/esp.img" "$f" "::$f"; done)

# Root slots: what the system uses, plus a third and 256 MiB, in MiB.
used_mib=$(du -s --block-size=1M "$root" | cut -f1)
root_mib=$(( (used_mib * 4 / 3 + 256 + 63) / 64 * 64 ))
mkfs.ext4 -q -F -L IMGA -U "$(uuid_of imga)" -E "hash_seed=$(uuid_of imga-seed)" \
    -d "$root" "$work/imga.img" "${root_mib}M" >/dev/null

mkfs.vfat -n CONFIG -i "$(uuid_of config | cut -c1-8)" -C "$work/config.img" $((CONFIG_MIB * 1024)) >/dev/null
mkfs.ext4 -q -F -L persist -O encrypt -U "$(uuid_of persist)" -E "hash_seed=$(uuid_of persist-seed)" \
    "$work/persist.img" "${PERSIST_MIB}M" >/dev/null

names=("EFI System" IMGA IMGB CONFIG P3)
sizes=("$ESP_MIB" "$root_mib" "$root_mib" "$CONFIG_MIB" "$PERSIST_MIB")
files=("$work/esp.img" "$work/imga.img" "" "$work/config.img" "$work/persist.img")
types=(C12A7328-F81F-11D2-BA4B-00A0C93EC93B 0FC63DAF-8483-4772-8E79-3D69D8477DE4
    0FC63DAF-8483-4772-8E79-3D69D8477DE4 EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
    0FC63DAF-8483-4772-8E79-3D69D8477DE4)
total_mib=2   # 1 MiB before the first partition, 1 MiB for the backup GPT at the end
for s in "${sizes[@]}"; do total_mib=$((total_mib + s)); done
disk=$work/disk.raw
truncate -s "${total_mib}M" "$disk"
{
    echo "label: gpt"
    echo "label-id: $(uuid_of disk)"
    echo "unit: sectors"
    offset=1
    for i in "${!names[@]}"; do
        echo "start=$((offset * 2048)), size=$((sizes[i] * 2048)), type=${types[i]}, uuid=$(uuid_of "part$i"), name=\"${names[i]}\""
        offset=$((offset + sizes[i]))
    done
} | sfdisk --quiet --no-reread --no-tell-kernel "$disk" >/dev/null
offset=1
: >"$work/parts.tsv"
for i in "${!names[@]}"; do
    if [ -n "${files[i]}" ]; then
        dd if="${files[i]}" of="$disk" bs=1M seek="$offset" conv=notrunc,sparse status=none
    fi
    printf '%s\t%d\t%d\n' "${names[i]}" $((offset * 1048576)) $((sizes[i] * 1048576)) >>"$work/parts.tsv"
    offset=$((offset + sizes[i]))
done

mkdir "$work/out"
mv "$disk" "$work/out/disk.raw"
python3 - "$work/parts.tsv" "$CMDLINE" "$kver" "$agent_version" "$base_hash" >"$work/out/layout.json" <<'PY'
import json
import sys

parts = []
for number, line in enumerate(open(sys.argv[1]).read().splitlines(), 1):
    name, start, size = line.split("\t")
    parts.append({"number": number, "name": name, "start": int(start), "size": int(size)})
keys = ("cmdline", "kernel", "eve_agent", "base")
print(json.dumps({"partitions": parts, **dict(zip(keys, sys.argv[2:]))}, indent=2))
PY
(cd "$work/out" && sha256sum disk.raw >SHA256SUMS)
chmod 0755 "$work/out"
chmod 0644 "$work/out"/*
rm -rf "$out"
mv "$work/out" "$out"
log "built $out in $((SECONDS - start)) s (root slots ${root_mib} MiB, disk ${total_mib} MiB)"
report
