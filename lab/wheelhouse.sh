#!/usr/bin/env bash
# Build lab/wheels: kexlab's wheel from this tree plus binary wheels of its
# dependencies for the lab image's Python and CPU (not the host's), so the image
# installs with `pip install --no-index` and never needs the package index.
#
#   lab/wheelhouse.sh [PYTHON] [DIR]
#
# PYTHON (default .venv/bin/python) runs pip on the host. The image's Python is
# KEXLAB_IMAGE_PYTHON (default 3.11: python:3.11-slim and Debian bookworm) and its CPU
# that of the Docker engine (amd64 or arm64), or KEXLAB_IMAGE_ARCH.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
dir=${2:-lab/wheels}
version=${KEXLAB_IMAGE_PYTHON:-3.11}
arch=${KEXLAB_IMAGE_ARCH:-}
[ -n "$arch" ] || arch=$(docker version --format '{{.Server.Arch}}' 2>/dev/null) || arch=$(uname -m)
arch=${arch//[[:space:]]/}
case $arch in
  amd64 | x86_64) arch=x86_64 ;;
  arm64 | aarch64) arch=aarch64 ;;
  *) echo "wheelhouse: unsupported CPU '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac

# A fixed timestamp makes the same source give the same wheel, byte for byte, so an
# unchanged tree keeps the image's build cache.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
# setuptools reuses build/: a module deleted from the tree would linger in the wheel;
# and nothing of it should stay behind in the tree.
rm -rf "$dir" build
trap 'rm -rf build' EXIT
mkdir -p "$dir"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dir" .
# manylinux2014 stands for glibc 2.17 and older; newer wheels name their glibc
# (Debian bookworm has 2.36).
"$python" -m pip download --quiet --only-binary=:all: --dest "$dir" \
  --implementation cp --python-version "$version" \
  --platform "manylinux2014_$arch" --platform "manylinux_2_28_$arch" --platform "manylinux_2_34_$arch" \
  "$dir"/kexlab-*.whl
echo "wheelhouse: $(find "$dir" -name '*.whl' | wc -l) wheels for cp${version/./} $arch in $dir"
