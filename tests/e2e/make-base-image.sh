#!/bin/sh
# Build a small Debian bookworm image with python3, pip and venv, without any container
# registry: debootstrap a minbase root file system and `docker import` it. The e2e test
# (tests/e2e/test_docker_build.py) and the deploy/Dockerfile build check use it as their base,
# because the build host may have no registry to pull python:3.x-slim from.
#
# Usage: sudo tests/e2e/make-base-image.sh [TAG]        (default TAG: cacheproxy-e2e-base:bookworm)
#        then: export CACHEPROXY_E2E_IMAGE=cacheproxy-e2e-base:bookworm
#
# The Debian mirror is the one this host's apt already uses (override with MIRROR=URL), so the
# script names no host itself.
set -eu

TAG=${1:-cacheproxy-e2e-base:bookworm}
SUITE=${SUITE:-bookworm}
DOCKER=${DOCKER:-docker}

if [ -z "${MIRROR:-}" ]; then
    # deb822 sources first (Debian 12's default), then the one-line format.
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security | head -n 1 || true)
fi
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
        /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 || true)
fi
if [ -z "${MIRROR:-}" ]; then
    echo "make-base-image: no Debian mirror found in apt sources; set MIRROR=URL" >&2
    exit 2
fi
command -v debootstrap >/dev/null || { echo "make-base-image: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }

ROOT=$(mktemp -d /tmp/cacheproxy-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT INT TERM

# minbase: essential packages and apt only; python3-pip pulls python3, python3-venv gives
# `python3 -m venv` (Debian's system python refuses pip installs: PEP 668).
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv \
    "$SUITE" "$ROOT" "$MIRROR"

# Nothing from the build host's apt state or the package caches belongs in the image.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

tar -C "$ROOT" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG"
echo "built $TAG; export CACHEPROXY_E2E_IMAGE=$TAG"
