#!/usr/bin/env bash
# The Ops Console's front-end libraries: `npm ci` installs exactly what package-lock.json pins (npm comes
# from Debian's nodejs and npm packages when missing), then the files that package.json names under
# mdops.vendor are copied into api/console/vendor/, where the API serves them as they are (no bundler).
# api/console/vendor/ is generated, not committed; tests/unit/test_console_files.py checks it against
# node_modules and the lockfile. With --omit-dev (the image), the test-only packages (axe-core) are left out.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v npm >/dev/null || "$(dirname "$0")/apt-install.sh" nodejs npm
npm ci --no-audit --no-fund --loglevel=error "$@" >&2
node - <<'JS'
const fs = require("fs");
const path = require("path");
const out = path.join("api", "console", "vendor");
fs.rmSync(out, { recursive: true, force: true });
for (const [target, source] of Object.entries(require("./package.json").mdops.vendor)) {
  fs.mkdirSync(path.dirname(path.join(out, target)), { recursive: true });
  fs.copyFileSync(path.join("node_modules", source), path.join(out, target));
}
console.log(`[build-console] ${out}: ${Object.keys(require("./package.json").mdops.vendor).join(", ")}`);
JS
