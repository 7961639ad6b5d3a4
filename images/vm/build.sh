#!/usr/bin/env bash
# The test VM guest, from Debian packages only: Debian's kernel and a busybox initramfs whose
# /init finds the NoCloud seed (a filesystem labelled `cidata`: an ISO 9660 on a CD-ROM (IDE or
# SATA) or on a virtio disk, or a vfat disk), prints its meta-data and user-data to the serial
# console (ttyS0) between marker lines, and keeps running.  An ACPI power-button press powers
# it off (busybox acpid), so a graceful libvirt shutdown works.  Lines of the seed that carry a
# token (`token:`, `...TOKEN=`) are printed redacted: the console is shipped as app logs.
#
# A cluster member: when the user data holds `EVE_K3S_ROLE=` (the agent's
# /etc/eve/k3s-member.env), /init also runs k3s-guest.sh (next to this script) in the
# background: eth0 up with DHCP and, for servers, an HTTPS "Kubernetes API" on port 6443 made
# with Debian's openssl (its libssl3 and libc6 are copied into the initramfs) and a kubeconfig
# posted to the metadata server.  Without that line nothing of this runs (no network either).
# See docs/clusters-node.md.  A network probe: when the user data holds `EVE_PROBE_` lines,
# /init runs net-probe.sh instead (DHCP, names looked up, URLs fetched, a port served, each
# answer a console line; see that script).
#
# Outputs, in $EVE_IMAGE_CACHE/vm-<input hash>/ (default cache /var/cache/eve-agent/images):
#   vmlinuz      the kernel, for direct kernel boot
#   initrd.gz    the busybox initramfs (cpio newc, gzip) with the modules it needs
#   disk.qcow2   a bootable disk (BIOS): a FAT "superfloppy" with syslinux, the same kernel and
#                initramfs; booted by SeaBIOS like any app disk, or attached as a data disk
# and `$EVE_IMAGE_CACHE/vm` -> that directory.  The last three lines are `<sha256>  <path>`.
#
# Inputs hashed: this script, k3s-guest.sh and net-probe.sh, the kernel package (linux-image-amd64's
# versioned dependency), busybox-static, openssl, libssl3, libc6 and syslinux versions as apt
# knows them.  Idempotent; a flock serialises concurrent builds; a cached build needs no
# network.  Needs: apt-get, dpkg-deb, chroot, busybox, mkfs.vfat (dosfstools), mcopy (mtools),
# syslinux, qemu-img (all in tools/deps.sh).
set -euo pipefail

CACHE=${EVE_IMAGE_CACHE:-/var/cache/eve-agent/images}
mkdir -p "$CACHE"
log() { printf '[vm] %s\n' "$*" >&2; }

candidate() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }
here=$(cd "$(dirname "$0")" && pwd)

kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9].*-amd64$/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { log "cannot resolve linux-image-amd64's kernel package"; exit 1; }
kernel_ver=$(candidate "$kernel_pkg")
busybox_ver=$(candidate busybox-static)
syslinux_ver=$(candidate syslinux)
openssl_ver=$(candidate openssl)
libssl_ver=$(candidate libssl3)
libc_ver=$(candidate libc6)
hash=$( {
    sha256sum <"$0"
    sha256sum <"$here/k3s-guest.sh"
    sha256sum <"$here/net-probe.sh"
    printf '%s=%s\nbusybox-static=%s\nsyslinux=%s\n' "$kernel_pkg" "$kernel_ver" "$busybox_ver" "$syslinux_ver"
    printf 'openssl=%s\nlibssl3=%s\nlibc6=%s\n' "$openssl_ver" "$libssl_ver" "$libc_ver"
} | sha256sum | cut -c1-16)
out=$CACHE/vm-$hash

exec 9>"$CACHE/.vm.lock"
flock 9

report() {
    ln -sfn "vm-$hash" "$CACHE/vm.tmp" && mv -T "$CACHE/vm.tmp" "$CACHE/vm"
    (cd "$out" && sha256sum vmlinuz initrd.gz disk.qcow2) | while read -r sum name; do
        printf '%s  %s\n' "$sum" "$out/$name"
    done
}

if [ -f "$out/SHA256SUMS" ] && (cd "$out" && sha256sum --quiet -c SHA256SUMS); then
    log "cached: $out ($kernel_pkg $kernel_ver, busybox $busybox_ver)"
    report
    exit 0
fi

log "building $out ($kernel_pkg $kernel_ver, busybox-static $busybox_ver, openssl $openssl_ver, syslinux $syslinux_ver)"
work=$(mktemp -d "$CACHE/.vm-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt's _apt user must be able to write the download directory.
chmod 0755 "$work"
apt-get download -q "$kernel_pkg=$kernel_ver" "busybox-static=$busybox_ver" \
    "openssl=$openssl_ver" "libssl3=$libssl_ver" "libc6=$libc_ver" >&2
dpkg-deb -x "$kernel_pkg"_*.deb kernel
dpkg-deb -x busybox-static_*.deb busybox
for pkg in openssl libssl3 libc6; do dpkg-deb -x "$pkg"_*.deb "$pkg"; done
kver=${kernel_pkg#linux-image-}
moddir=kernel/lib/modules/$kver

# --- initramfs ------------------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,run,seed,etc/acpi,etc/ssl,lib/modules,lib64,usr/bin}
cp busybox/bin/busybox "$root/bin/busybox"
# openssl and what it links (ldd: libssl, libcrypto, libc, ld.so); checked below in a chroot.
multiarch=lib/x86_64-linux-gnu
mkdir -p "$root/$multiarch"
cp openssl/usr/bin/openssl "$root/usr/bin/openssl"
cp libssl3/usr/$multiarch/libssl.so.3 libssl3/usr/$multiarch/libcrypto.so.3 "$root/$multiarch/"
cp libc6/$multiarch/libc.so.6 libc6/$multiarch/ld-linux-x86-64.so.2 "$root/$multiarch/"
ln -s "/$multiarch/ld-linux-x86-64.so.2" "$root/lib64/ld-linux-x86-64.so.2"
chroot "$root" /usr/bin/openssl version >/dev/null || { log "openssl does not run in the initramfs"; exit 1; }
cp "$here/k3s-guest.sh" "$root/bin/eve-k3s-guest"
chmod 0755 "$root/bin/eve-k3s-guest"
cp "$here/net-probe.sh" "$root/bin/eve-net-probe"
chmod 0755 "$root/bin/eve-net-probe"
cat >"$root/etc/ssl/openssl.cnf" <<'EOF'
# The test guest's own: what `openssl req` needs, and the CA's extensions (k3s-guest.sh).
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = eve-test-guest
[ ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
cat >"$root/etc/udhcpc.script" <<'EOF'
#!/bin/busybox sh
# udhcpc's events: the lease's address and routes on the interface, one console line.  Routes:
# the classless static routes (option 121, `staticroutes`: "dst/len gw ...") when given (RFC
# 3442: then the router option is ignored), else the first router as the default route.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$mask "; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        via=""
        if [ -n "${staticroutes:-}" ]; then
            set -- $staticroutes
            while [ $# -ge 2 ]; do
                if [ "$2" = 0.0.0.0 ]; then
                    ip route replace "$1" dev "$interface"
                else
                    ip route replace "$1" via "$2" dev "$interface"
                fi
                via="$via $1>$2"
                shift 2
            done
        else
            for r in ${router:-}; do
                ip route replace default via "$r" dev "$interface"
                via=" $r"
                break
            done
        fi
        if [ -n "${dns:-}" ]; then
            for d in $dns; do echo "nameserver $d"; done >/etc/resolv.conf
        fi
        echo "eve-test-guest: $interface $ip/$mask via${via:- none} (DHCP)" >>/dev/console
    fi
    ;;
esac
exit 0
EOF
chmod 0755 "$root/etc/udhcpc.script"

# Modules /init loads, in dependency order (each module's own "depends=" from .modinfo).
declare -A seen=()
order=()
modpath() { find "$moddir" -name "$1.ko" -print -quit; }
add_module() {
    local name=$1 file dep
    [ -z "${seen[$name]:-}" ] || return 0
    seen[$name]=1
    file=$(modpath "$name")
    [ -n "$file" ] || { log "module $name not in $kernel_pkg"; exit 1; }
    for dep in $(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "$dep"
    done
    cp "$file" "$root/lib/modules/$name.ko"
    order+=("$name")
}
# virtio disks; IDE (pc) and SATA (q35) CD-ROMs and disks; ISO 9660 and vfat; power button.
# virtio_net for a cluster member's network (loaded always; eth0 stays down otherwise).
for m in virtio_pci virtio_blk virtio_net ata_piix ahci sr_mod sd_mod isofs vfat nls_cp437 \
    nls_ascii button evdev; do
    add_module "$m"
done
printf '%s\n' "${order[@]}" >"$root/etc/modules"

cat >"$root/etc/acpid.conf" <<'EOF'
PWRF power.sh
EOF
cat >"$root/etc/acpi/power.sh" <<'EOF'
#!/bin/busybox sh
echo "eve-test-guest: power button, powering off" >/dev/console
sync
poweroff -f
EOF
chmod 0755 "$root/etc/acpi/power.sh"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "eve-test-guest: up, kernel $(uname -r)"
for m in $(cat /etc/modules); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
acpid -c /etc/acpi -a /etc/acpid.conf -l /dev/null 2>/dev/null
seed=""
i=0
while [ $i -lt 100 ]; do
    seed=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null || true)
    [ -n "$seed" ] && break
    sleep 0.2
    i=$((i + 1))
done
if [ -z "$seed" ]; then
    echo "eve-test-guest: no NoCloud seed (no filesystem labelled cidata)"
elif mount -o ro -t iso9660 "$seed" /seed 2>/dev/null || mount -o ro -t vfat "$seed" /seed; then
    echo "eve-test-guest: NoCloud seed on $seed"
    echo "----- meta-data"
    cat /seed/meta-data
    echo "----- user-data"
    # Tokens never reach the console (it is shipped as app logs): a `token:` line and the lines
    # indented under it (a folded value), and any `...TOKEN=` value, are printed redacted; so
    # is the manifest URL (EVE_K3S_MANIFEST_URL=: an import URL often carries a token).
    awk '
        cont && /^[ \t]*$/ { print; next }
        cont { match($0, /^[ \t]*/); if (RLENGTH > ind) { print substr($0, 1, RLENGTH) "<redacted>"; next } }
        { cont = 0; low = tolower($0) }
        low ~ /eve_k3s_manifest_url=/ {
            print substr($0, 1, index(low, "eve_k3s_manifest_url=") + 20) "<redacted>"; next
        }
        low ~ /token:/ {
            match($0, /^[ \t]*/); ind = RLENGTH; cont = 1
            print substr($0, 1, index(low, "token:") + 5) " <redacted>"; next
        }
        low ~ /token=/ { print substr($0, 1, index(low, "token=") + 5) "<redacted>"; next }
        { print }
    ' /seed/user-data
    echo "----- end of seed"
    if grep -q '^[[:space:]]*EVE_K3S_ROLE=' /seed/user-data; then
        /bin/eve-k3s-guest /seed/user-data &
    elif grep -q '^[[:space:]]*EVE_PROBE_' /seed/user-data; then
        /bin/eve-net-probe /seed/user-data &
    fi
else
    echo "eve-test-guest: cannot mount the seed on $seed"
fi
echo "eve-test-guest: running"
while :; do sleep 3600; done
EOF
chmod 0755 "$root/init"
(cd "$root" && find . | LC_ALL=C sort | "$work/busybox/bin/busybox" cpio -o -H newc 2>/dev/null) |
    gzip -9n >initrd.gz

# --- bootable disk: FAT superfloppy + syslinux (no mounts) ---------------------------------------
cp "kernel/boot/vmlinuz-$kver" vmlinuz
cat >syslinux.cfg <<'EOF'
DEFAULT eve
PROMPT 0
TIMEOUT 0
LABEL eve
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet
EOF
size_mib=$(( ($(stat -c %s vmlinuz) + $(stat -c %s initrd.gz)) / 1048576 + 8 ))
mkfs.vfat -n EVETEST -C disk.raw $((size_mib * 1024)) >/dev/null
syslinux --install disk.raw
mcopy -i disk.raw vmlinuz initrd.gz syslinux.cfg ::/
qemu-img convert -q -f raw -O qcow2 disk.raw disk.qcow2

mkdir -p "$work/out"
mv vmlinuz initrd.gz disk.qcow2 "$work/out/"
(cd "$work/out" && sha256sum vmlinuz initrd.gz disk.qcow2 >SHA256SUMS)
chmod 0755 "$work/out"
chmod 0644 "$work/out"/*
rm -rf "$out"
mv "$work/out" "$out"
log "built $out"
report
