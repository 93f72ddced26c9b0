#!/usr/bin/env bash
# Build the lab's base image from Debian packages, for machines that cannot pull
# from a registry (CI, a classroom without internet): debootstrap a minimal
# bookworm with everything the Dockerfile would otherwise apt-get, import it, and
# print its name. The image is kept, so the next run on the same engine is instant.
#
#   lab/offline-base.sh [IMAGE]          # default kexlab-lab-base:bookworm
#   make lab BASE_IMAGE=$(lab/offline-base.sh)
#
# Needs root (debootstrap), debootstrap, a reachable Debian mirror and a Docker engine.
set -euo pipefail

image=${1:-kexlab-lab-base:bookworm}
suite=bookworm
# The same packages the Dockerfile installs on python:3.11-slim, plus Python itself.
packages=python3,python3-venv,ca-certificates,mosquitto,mosquitto-clients,tcpdump,libcap2-bin,iproute2

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

# The mirror this machine's apt already uses (deb822 or one-line sources), else Debian's.
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
  } | grep -v -e security -e '^$' | grep -m1 '/debian/\?$' || true
)
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/kexlab-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite from $mirror (about a minute)..." >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"
# Package caches and lists are not needed at run time and would only grow the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "$image"
