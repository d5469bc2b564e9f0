#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install the Debian packages kho-inspect's build and tests need on the host.
# Idempotent: does nothing when everything is already installed.
#   swig, gcc, make: pylibfdt is built from its sdist by pip.
#   librsvg2-bin: rsvg-convert, which the memory-map tests render the SVG with.
#   the lab's own packages (QEMU, mmdebstrap, kernel build deps) come from vm/ci-deps.sh.
set -eu
need=()
for pkg in swig gcc make librsvg2-bin; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "install-host-deps: installing ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-host-deps: need root to apt-get install ${need[*]}" >&2
        exit 2
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
