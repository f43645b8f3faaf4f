#!/usr/bin/env bash
# OHIF Viewer v3, prebuilt, for the conformance test (tests/e2e/test_ohif.py): the npm registry's
# @ohif/app package ships its production build in dist/. Fetched with `npm pack` (no dependencies are
# installed), checked against the pinned integrity, and unpacked to var/ohif/dist. Runs once per version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=3.13.2
INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
TARGET=var/ohif
STAMP=$TARGET/dist/.readroom-ohif-$VERSION

[[ -f $STAMP ]] && exit 0
rm -rf "$TARGET"
mkdir -p "$TARGET"
echo "fetch_ohif: npm pack @ohif/app@$VERSION"
tarball=$(cd "$TARGET" && npm pack --silent "@ohif/app@$VERSION")
# npm's own integrity format (sha512-<base64>), computed by the venv's Python (bootstrap made it).
actual=$(.venv/bin/python -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$TARGET/$tarball")
if [[ $actual != "$INTEGRITY" ]]; then
    echo "fetch_ohif: $tarball does not match the pinned integrity ($actual)" >&2
    rm -rf "$TARGET"
    exit 1
fi
tar -xzf "$TARGET/$tarball" -C "$TARGET" package/dist
mv "$TARGET/package/dist" "$TARGET/dist"
rm -rf "$TARGET/package" "$TARGET/$tarball"
touch "$STAMP"
