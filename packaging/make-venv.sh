#!/usr/bin/env bash
# Make a self-contained Python environment for a Debian package, staged under the package's
# build root but working at its installed path.  Called by debian/rules from the root of the
# exported source tree (see packaging/build-deb.sh):
#
#   packaging/make-venv.sh STAGE_ROOT PREFIX REQUIREMENT [--link-system MODULE] [--import MODULE]...
#   e.g. packaging/make-venv.sh debian/eve-agent /opt/eve-agent '.[drivers]' \
#            --link-system nftables --import agent.daemon
#
# The environment is a venv of Debian's /usr/bin/python3 (3.11) made at STAGE_ROOT/PREFIX without
# pip, filled by a separate build-tools pip (`pip --python`) with wheels from PyPI, every version
# pinned by packaging/constraints.txt; nothing is byte-compiled (the package's postinst compiles,
# its prerm removes the caches, so dpkg owns no .pyc and leaves none behind).  Then:
#   - the staging path is replaced by PREFIX wherever it was written (script shebangs,
#     activate scripts, pyvenv.cfg), and the build fails if it is left anywhere;
#   - PEP 610's direct_url.json of the project (a file:// URL of the build tree) is dropped;
#   - extension modules are stripped (no random pip build paths from the ones compiled here)
#     and file modes normalised; the modules named by --import must still import;
#   - MODULE from Debian's /usr/lib/python3/dist-packages is linked in (python3-nftables is
#     not on PyPI; the package depends on it).
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 STAGE_ROOT PREFIX REQUIREMENT [--link-system MODULE] [--import MODULE]..." >&2
    exit 2
fi
stage_root=$1 prefix=$2 requirement=$3
shift 3
links=()
imports=()
while [ $# -gt 0 ]; do
    case $1 in
        --link-system) links+=("$2"); shift 2 ;;
        --import) imports+=("$2"); shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done

log() { printf '[make-venv %s] %s\n' "$prefix" "$*" >&2; }

SYSTEM_PYTHON=/usr/bin/python3
# The pip that builds the environments (pinned as tools/deps.sh pins the project's).
PIP_VERSION=26.3
PIP_FLAGS=(--disable-pip-version-check --progress-bar off --no-input)
dest=$(realpath -m "$stage_root$prefix")
tools=$(realpath -m debian/.venv-tools)

if [ ! -x "$tools/bin/pip" ] || ! "$tools/bin/pip" --version 2>/dev/null | grep -q "^pip $PIP_VERSION "; then
    log "build tools: pip $PIP_VERSION in $tools"
    rm -rf "$tools"
    "$SYSTEM_PYTHON" -m venv "$tools"
    "$tools/bin/python" -m pip install "${PIP_FLAGS[@]}" -q "pip==$PIP_VERSION"
fi

log "venv at $dest"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
"$SYSTEM_PYTHON" -m venv --without-pip "$dest"
# pip's own cache (~/.cache/pip, shared with `make deps`) keeps the wheels it built from sdists,
# so tpm2-pytss and libvirt-python compile once per machine.
"$tools/bin/pip" --python "$dest/bin/python" install "${PIP_FLAGS[@]}" -q \
    --no-compile --no-warn-script-location \
    --constraint packaging/constraints.txt "$requirement"

site=$("$dest/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for module in "${links[@]}"; do
    src=/usr/lib/python3/dist-packages/$module
    [ -e "$src" ] || log "note: $src is not on the build machine (fine: the package depends on it)"
    ln -sfn "$src" "$site/$module"
done

# The project was installed from a directory: its direct_url.json names the build tree.
for info in "$site"/eve_agent-*.dist-info; do
    if [ -f "$info/direct_url.json" ]; then
        rm "$info/direct_url.json"
        sed -i '/\/direct_url\.json,/d' "$info/RECORD"
    fi
done

# Strip the extension modules: their symbol tables and debug info are no use in a package,
# and those compiled here from sdists (tpm2-pytss, libvirt-python) would carry pip's random
# build paths.  Libraries that auditwheel grafted into a wheel (*.libs/) are left alone: strip
# can corrupt a patchelf'ed library.  The import check below catches a module strip broke.
find "$dest" -name '*.so' -type f -not -path '*.libs/*' -print0 | LC_ALL=C sort -z |
    xargs -0 -r strip --strip-unneeded --remove-section=.comment

# Wheels carry whatever modes their authors had (protobuf's files are all 0755): only the
# scripts in bin/ are executable, everything else is 0644 (directories 0755).
find "$dest" -type d -exec chmod 0755 {} +
find "$dest" -type f -not -path "$dest/bin/*" -exec chmod 0644 {} +

find "$dest" -name __pycache__ -type d -prune -exec rm -rf {} +

# Relocate: every text file that names the staging directory names PREFIX instead.
grep -rlIF --null "$dest" "$dest" | xargs -0 -r sed -i "s|$dest|$prefix|g"
if leftover=$(grep -rlF "$dest" "$dest"); then
    log "the staging path is still written in:"
    printf '  %s\n' $leftover >&2
    exit 1
fi
# The relocated scripts no longer match the hashes in their distributions' RECORD files: write
# the hashes of the files as packaged (otherwise RECORD would name the staging path's hash, and
# two builds in different directories would differ).
"$dest/bin/python" -B - "$site" <<'PY'
import base64
import csv
import hashlib
import io
import pathlib
import sys

site = pathlib.Path(sys.argv[1])
for record in sorted(site.glob("*.dist-info/RECORD")):
    rows = list(csv.reader(io.StringIO(record.read_text())))
    changed = False
    for row in rows:
        if len(row) != 3 or not row[1]:
            continue
        path = (site / row[0]).resolve()
        if not path.is_file():
            continue
        data = path.read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if row[1] != f"sha256={digest}":
            row[1], row[2] = f"sha256={digest}", str(len(data))
            changed = True
    if changed:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        record.write_text(out.getvalue())
PY
# Every extension module imports, and so do the modules named by --import (from /, so that the
# source tree in the working directory does not count): a module that strip broke, or whose
# C library is missing, fails the build here rather than on a node.
(cd / && "$dest/bin/python" -B - "$site" "${imports[@]}" <<'PY'
import importlib
import importlib.machinery
import pathlib
import sys

site = pathlib.Path(sys.argv[1])
names = []
for path in sorted(site.rglob("*.so")):
    if any(part.endswith(".libs") for part in path.parts):
        continue
    rel = path.relative_to(site).as_posix()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if rel.endswith(suffix):
            names.append(rel[: -len(suffix)].replace("/", "."))
            break
for name in names + sys.argv[2:]:
    importlib.import_module(name)
print(f"imported {len(names)} extension modules and {len(sys.argv) - 2} named ones")
PY
) >&2 || { log "import check failed"; exit 1; }
log "done: $(find "$dest" -type f | wc -l) files, $(du -sm "$dest" | cut -f1) MiB"
