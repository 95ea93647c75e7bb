#!/usr/bin/env bash
# Installs ONNX Runtime 1.30.0's Node.js binding (onnxruntime-node, CPU execution provider) into a
# cache directory outside the repo, for bench/compare_peers.py's ORT peer. Idempotent: does nothing
# when the right version is already there. Prints the install directory on its last line.
#
#     bash bench/install_ort.sh            # into $FPN_ORT_DIR, default ~/.cache/fpn-ort
#
# ONNXRUNTIME_NODE_INSTALL=skip: the package's postinstall otherwise tries to download GPU
# binaries from a host outside the npm registry, and fails. The linux x64 CPU library
# (bin/napi-v6/linux/x64/libonnxruntime.so.1) ships inside the npm package itself.
set -euo pipefail
VERSION=1.30.0
DIR="${FPN_ORT_DIR:-$HOME/.cache/fpn-ort}"

installed_version() {
    node -e "process.stdout.write(require('$DIR/node_modules/onnxruntime-node/package.json').version)" \
        2>/dev/null || true
}

command -v node >/dev/null || { echo "node is missing (apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is missing (apt-get install npm)" >&2; exit 1; }

if [ "$(installed_version)" != "$VERSION" ]; then
    mkdir -p "$DIR"
    [ -f "$DIR/package.json" ] || echo '{"name": "fpn-ort", "private": true}' > "$DIR/package.json"
    (cd "$DIR" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --save-exact \
        "onnxruntime-node@$VERSION" >&2)
fi
# Loads the binding: fails here, not in the benchmark, if the native library is unusable.
(cd "$DIR" && node -e "const ort = require('onnxruntime-node'); if (!ort.InferenceSession) process.exit(1)") \
    || { echo "onnxruntime-node in $DIR does not load" >&2; exit 1; }
[ "$(installed_version)" = "$VERSION" ] || { echo "expected onnxruntime-node $VERSION in $DIR" >&2; exit 1; }
echo "$DIR"
