#!/usr/bin/env bash
# Build a local base image for the Dockerfile on a machine with no registry: a minimal Debian
# (debootstrap) plus this machine's Python and the project's venv (torch, torchvision, ...), so
# the Dockerfile's pinned pip installs find everything already there and download nothing.
#   scripts/docker-base-image.sh WORKDIR VENV TAG
set -euo pipefail
work="$1"; venv="$(cd "$2" && pwd)"; tag="$3"
python_home="$(sed -n 's/^home = //p' "$venv/pyvenv.cfg")"   # .../bin of the base interpreter
python_prefix="$(dirname "$python_home")"
rootfs="$work/rootfs"
if [ ! -x "$rootfs/bin/bash" ]; then
    # the shared libraries the interpreter and torch load
    debootstrap --variant=minbase --include=libffi8,libssl3,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libgomp1,libstdc++6,libuuid1,libreadline8,libncursesw6,libgdbm6 \
        bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
fi
chmod 0755 "$rootfs/root"   # the interpreter lives under /root here; the image's user must reach it
mkdir -p "$rootfs/opt/venv/bin"
sed "s|^command = .*||" "$venv/pyvenv.cfg" >"$rootfs/opt/venv/pyvenv.cfg"
ln -sfn "$python_home/python3" "$rootfs/opt/venv/bin/python3"
ln -sfn python3 "$rootfs/opt/venv/bin/python"
ln -sfn lib "$rootfs/opt/venv/lib64"
# One tar stream: the Debian root, the interpreter at its own path, the venv's packages at /opt/venv.
tar -C "$rootfs" -c . \
    -C / "${python_prefix#/}" \
    -C "$(dirname "$venv")" --transform "s,^$(basename "$venv")/lib,opt/venv/lib,S" --exclude='__pycache__' "$(basename "$venv")/lib" \
  | docker import --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$tag" >/dev/null
echo "built $tag"
