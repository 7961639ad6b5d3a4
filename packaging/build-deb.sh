#!/usr/bin/env bash
# `make deb`: the Debian packages eve-agent_<version>_<arch>.deb and
# eve-controller_<version>_<arch>.deb, in build/ (EVE_DEB_OUT).
#
#   packaging/build-deb.sh            build, or say which packages are current
#   EVE_DEB_SOURCE=HEAD packaging/build-deb.sh     from a commit instead of the work tree
#
# What goes in: the files of the packaged paths (agent/, controller/, systemd/, packaging/,
# pyproject.toml and README.md, which is the wheel's description), as the work tree has them
# (default: tracked files and new ones that .gitignore does not exclude, so never caches or
# build output) or as a commit has them (EVE_DEB_SOURCE=HEAD or any commit); so a clean
# checkout builds the same packages as any other clean checkout of that commit.  They are copied to
# build/deb-work/src with packaging/debian as debian/, a changelog is written, and
# dpkg-buildpackage -b runs there (debian/rules; the Python environments come from PyPI,
# pinned by packaging/constraints.txt).
#
# Version: <pyproject version>+git<UTC date of the last commit touching those paths>.<its hash>,
# plus .local.<8 hex of the hash of the sources> when the work tree differs from that commit.
# SOURCE_DATE_EPOCH is that commit's time, so file times, the changelog and the packages do not
# depend on when or where they were built.
#
# Cached: the packages are rebuilt only when the hash of what goes in (the packaged files, the
# system Python's version) changed; otherwise this prints the current ones in well under a
# second.  The last lines are `<sha256>  <path>` of the two packages.  Runs under an flock.
# Needs: git, dpkg-dev, debhelper, python3-venv and the build dependencies of
# packaging/debian/control (all in tools/deps.sh), and PyPI for a build.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SOURCE=${EVE_DEB_SOURCE:-worktree}
OUT=$(realpath -m "${EVE_DEB_OUT:-build}")
PATHS=(agent controller systemd packaging pyproject.toml README.md)

log() { printf '[deb] %s\n' "$*" >&2; }

mkdir -p "$OUT"
exec 9>"$OUT/.deb.lock"
flock 9

if [ "$SOURCE" = worktree ]; then
    rev=HEAD
    # The files as they are in the work tree: tracked ones (less deleted ones) and new ones not
    # ignored by .gitignore (so no caches, no build output).
    list_files() { git ls-files -z --cached --others --exclude-standard -- "${PATHS[@]}" |
        while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done; }
    source_hash=$(list_files | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
    if git diff --quiet HEAD -- "${PATHS[@]}" &&
        [ -z "$(git ls-files --deleted --others --exclude-standard -- "${PATHS[@]}")" ]; then
        dirty=
    else
        dirty=1
    fi
else
    rev=$(git rev-parse --verify "$SOURCE^{commit}")
    source_hash=$(git ls-tree -r "$rev" -- "${PATHS[@]}" | sha256sum | cut -c1-16)
    dirty=
fi

last=$(git log -1 --format=%H "$rev" -- "${PATHS[@]}")
epoch=$(git log -1 --format=%ct "$last")
base_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
[ -n "$base_version" ] || { log "no version in pyproject.toml"; exit 1; }
version="$base_version+git$(date -u -d "@$epoch" +%Y%m%d%H%M%S).${last:0:7}"
[ -z "$dirty" ] || version="$version.local.${source_hash:0:8}"
arch=$(dpkg --print-architecture)
python_version=$(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')
key="$source_hash python=$python_version version=$version arch=$arch"
debs=("$OUT/eve-agent_${version}_$arch.deb" "$OUT/eve-controller_${version}_$arch.deb")
stamp=$OUT/.deb-stamp

report() {
    local deb
    for deb in "${debs[@]}"; do
        printf '%s  %s\n' "$(sha256sum <"$deb" | cut -d' ' -f1)" "$deb"
    done
}

if [ -f "$stamp" ] && [ "$(head -1 "$stamp")" = "$key" ] &&
    (cd "$OUT" && tail -n +2 "$stamp" | sha256sum --quiet -c - 2>/dev/null); then
    log "current: $version"
    report
    exit 0
fi

log "building $version from ${SOURCE} (sources $source_hash)"
work=$OUT/deb-work
rm -rf "$work"
mkdir -p "$work/src"
if [ "$SOURCE" = worktree ]; then
    list_files | tar -c --null -T - | tar -x -C "$work/src"
else
    git archive "$rev" -- "${PATHS[@]}" | tar -x -C "$work/src"
fi
cp -a "$work/src/packaging/debian" "$work/src/debian"
commit_line="Built from commit $last${dirty:+,
    with local changes (sources $source_hash)}."
cat >"$work/src/debian/changelog" <<EOF
eve-agent ($version) bookworm; urgency=medium

  * $commit_line

 -- $(sed -n 's/^Maintainer: //p' "$work/src/debian/control")  $(date -u -R -d "@$epoch")
EOF

start=$SECONDS
(
    cd "$work/src"
    export SOURCE_DATE_EPOCH=$epoch
    # The build must not see a developer's Python settings or virtualenv.
    unset PYTHONPATH VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
    dpkg-buildpackage -b -us -uc --no-sign >"$work/build.log" 2>&1
) || {
    log "dpkg-buildpackage failed; the end of $work/build.log:"
    tail -40 "$work/build.log" >&2
    exit 1
}
rm -f "$OUT"/eve-agent_*.deb "$OUT"/eve-controller_*.deb
for deb in "${debs[@]}"; do
    mv "$work/$(basename "$deb")" "$deb"
done
{
    echo "$key"
    (cd "$OUT" && sha256sum -- "${debs[@]##*/}")
} >"$stamp"
log "built in $((SECONDS - start)) s: ${debs[*]##*/}"
report
