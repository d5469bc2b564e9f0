#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install the Debian packages the kernel lab needs on the host (idempotent):
#   QEMU (TCG/KVM guest), mmdebstrap (sid root filesystem), the kernel build
#   dependencies (flex, bison, bc, libelf, libssl, pahole for BTF), and the
#   tools used to unpack Debian's linux-source package; for the arm64 lab the
#   cross compiler (kernel and the initramfs helper, static: libc6-dev-arm64-cross)
#   and qemu-system-aarch64 (qemu-system-arm).
# The kernel source itself comes through a private apt configuration under
# ~/.cache/kho-inspect/apt (kho_inspect/lab/kernel.py): nothing is added to
# /etc/apt.
set -eu
pkgs=(qemu-system-x86 qemu-utils mmdebstrap debian-archive-keyring flex bison bc
      libelf-dev libssl-dev dwarves cpio xz-utils zstd kmod rsync make gcc swig patch
      python3-venv qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
need=()
for pkg in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "ci-deps: installing ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "ci-deps: the lab needs root to apt-get install ${need[*]}" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
