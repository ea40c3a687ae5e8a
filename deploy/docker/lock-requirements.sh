#!/usr/bin/env bash
# Regenerates the hash-locked runtime requirements the image installs with
# `pip install --require-hashes --no-deps` (deploy/docker/Dockerfile):
#
#   requirements-serve.lock   streamlearn[serve]                      (the `server` target)
#   requirements-worker.lock  streamlearn[worker,kafka-fast,plots]    (the default target)
# and in both setuptools, which builds the project in the image (no build isolation).
#
# Resolved for the image's Python (PYTHON_VERSION below = the base image's) on Linux, with the
# sha256 of every wheel and sdist of each pinned version (so the same lock serves x86-64 and
# aarch64). torch is pinned to the Dockerfile's TORCH_VERSION but left out of the worker lock,
# with the CUDA packages only its PyPI build pulls in (nvidia-*, cuda-*, triton): the image
# installs torch from the PyTorch index of its TORCH_VARIANT (cpu, cu128, ...), whose wheels
# the resolver cannot see. tests/deploy/test_docker_image.py checks that the locks cover what
# pyproject.toml requires and that the pins satisfy it.
#
# Needs uv (pip install uv) and the PyPI index. Run from anywhere after changing the project's
# requirements, TORCH_VERSION or the base image:  bash deploy/docker/lock-requirements.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dockerfile="$here/Dockerfile"
# the Python of the pinned base image (ARG PYTHON_IMAGE=python:X.Y.Z-slim-...@sha256:...)
python_version=$(sed -n 's/^ARG PYTHON_IMAGE=python:\([0-9.]*\)-.*/\1/p' "$dockerfile")
torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' "$dockerfile")
[ -n "$python_version" ] && [ -n "$torch_version" ] || {
    echo "cannot read PYTHON_IMAGE / TORCH_VERSION from $dockerfile" >&2
    exit 1
}
uv=${UV:-uv}
export UV_INDEX_URL=${UV_INDEX_URL:-https://pypi.org/simple}
common=(--python-version "$python_version" --python-platform x86_64-manylinux_2_28
        --no-header --quiet --generate-hashes)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"

# setuptools too: the image builds the project without build isolation (pyproject.toml)
echo 'setuptools>=68' > "$tmp/build.in"
"$uv" pip compile pyproject.toml "$tmp/build.in" --extra serve "${common[@]}" \
    -o "$here/requirements-serve.lock"

printf 'setuptools>=68\ntorch==%s\n' "$torch_version" > "$tmp/build.in"
worker=(pyproject.toml "$tmp/build.in" --extra worker --extra kafka-fast --extra plots)
"$uv" pip compile "${worker[@]}" --python-version "$python_version" \
    --python-platform x86_64-manylinux_2_28 --quiet -o "$tmp/all.txt"
skip=()
for name in $(sed -n 's/^\(torch\|triton\|nvidia-[a-z0-9-]*\|cuda-[a-z0-9-]*\)==.*/\1/p' "$tmp/all.txt"); do
    skip+=(--no-emit-package "$name")
done
"$uv" pip compile "${worker[@]}" "${common[@]}" "${skip[@]}" \
    -o "$here/requirements-worker.lock"
# the temporary input's path must not end up in the locks; a header says what each is for
sed -i "s|$tmp/build.in|deploy/docker/lock-requirements.sh|" "$here"/requirements-*.lock
sed -i "1i # streamlearn[serve] for Python $python_version (the base image's); made by deploy/docker/lock-requirements.sh" \
    "$here/requirements-serve.lock"
sed -i "1i # streamlearn[worker,kafka-fast,plots] for Python $python_version (the base image's), without torch $torch_version (from its index); made by deploy/docker/lock-requirements.sh" \
    "$here/requirements-worker.lock"
echo "wrote requirements-serve.lock, requirements-worker.lock (Python $python_version, torch $torch_version left to its index)"
