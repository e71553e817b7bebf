#!/bin/sh
# Download the wheels that deploy/Dockerfile installs (cacheproxy's dependencies, those of
# its default EXTRAS=s3, and setuptools for building it), for the e2e test that builds that
# image with no registry in reach: the test publishes them on its fake upstream, and the
# image build installs them through a running cacheproxy.
#
# Usage: tests/e2e/make-wheelhouse.sh DIR [PYTHON_VERSION]   (default 3.11: Debian bookworm's)
#        then: export CACHEPROXY_E2E_WHEELHOUSE=DIR
# Needs the package index this host's pip is configured for.
set -eu
DIR=${1:?usage: make-wheelhouse.sh DIR [PYTHON_VERSION]}
PYVER=${2:-3.11}
PIP=${PIP:-python3 -m pip}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
REQS=$(python3 - "$HERE/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
extras = project["project"]["optional-dependencies"]["s3"]
print("\n".join(project["project"]["dependencies"] + extras + project["build-system"]["requires"]))
PY
)
mkdir -p "$DIR"
echo "$REQS" > "$DIR/requirements.txt"
$PIP download --dest "$DIR" --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux2014_"$(uname -m)" -r "$DIR/requirements.txt"
rm "$DIR/requirements.txt"
echo "export CACHEPROXY_E2E_WHEELHOUSE=$DIR"
