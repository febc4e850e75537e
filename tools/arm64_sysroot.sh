#!/usr/bin/env bash
# An arm64 Debian CPython, runnable on an x86_64 machine through qemu-user,
# to import the built Lambda package on its real target (tox -e lambda-arm64).
#
#   tools/arm64_sysroot.sh DIR      -> DIR/sysroot/usr/bin/python3.13 (arm64 ELF)
#
# Installs qemu-user-static with apt-get when qemu-aarch64-static is missing.
# Downloads Debian's arm64 python3.X packages and the libraries they link to
# with a private apt configuration (its own sources list, lists, cache and
# status under DIR), so the machine's apt setup is neither read nor changed,
# and unpacks them with `dpkg -x` (no maintainer scripts, no root needed for
# that part). Idempotent: an existing sysroot is reused.
#
# PYTHON_MINOR (default 3.13) must be the Lambda runtime's; DEBIAN_SUITE
# (default trixie) must carry it. See docs/packaging.md.
set -euo pipefail

DIR=${1:?usage: $0 DIR}
PY=${PYTHON_MINOR:-3.13}
SUITE=${DEBIAN_SUITE:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

# What python3.X(-minimal) and its stdlib's C modules load: ssl, ctypes,
# pyexpat (botocore parses S3's XML), zlib/bz2/lzma, uuid, mimetypes' tables;
# and libstdc++, which Lambda's OS has and frozenlist's C++ extension links to
# (without it frozenlist silently falls back to pure Python).
PACKAGES=(
  "python${PY}-minimal" "libpython${PY}-minimal" "libpython${PY}-stdlib"
  libc6 libgcc-s1 gcc-14-base libstdc++6 libssl3t64 libffi8 zlib1g libexpat1
  libbz2-1.0 liblzma5 libzstd1 libuuid1 media-types netbase
)

if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  echo "arm64_sysroot: installing qemu-user-static" >&2
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user-static >/dev/null
fi

SYSROOT="$DIR/sysroot"
WANTED="$SUITE ${PACKAGES[*]}"
if [ -x "$SYSROOT/usr/bin/python${PY}" ] && [ "$(cat "$SYSROOT/.packages" 2>/dev/null)" = "$WANTED" ]; then
  echo "$SYSROOT"
  exit 0
fi

mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs" "$WORK/root"
: >"$WORK/status"
echo "deb [arch=arm64 signed-by=$KEYRING] $MIRROR $SUITE main" >"$WORK/sources.list"
APT=(
  -o "Dir::Etc::sourcelist=$WORK/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$WORK/lists" -o "Dir::State::status=$WORK/status"
  -o "Dir::Cache=$WORK/cache" -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
  -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)"
)
apt-get "${APT[@]}" -qq update
(cd "$WORK/debs" && apt-get "${APT[@]}" -qq download "${PACKAGES[@]}")
for deb in "$WORK"/debs/*.deb; do
  dpkg -x "$deb" "$WORK/root"
done
# Debian is merged-/usr: /lib and /bin come from base-files as links to usr/.
for d in lib bin sbin; do
  [ -e "$WORK/root/$d" ] || ln -s "usr/$d" "$WORK/root/$d"
done
[ -x "$WORK/root/usr/bin/python${PY}" ] || { echo "no python${PY} in $SUITE" >&2; exit 1; }
echo "$WANTED" >"$WORK/root/.packages"
rm -rf "$SYSROOT"
mv "$WORK/root" "$SYSROOT"
echo "$SYSROOT"
