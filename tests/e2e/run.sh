#!/usr/bin/env bash
# ctest entry for the real-client tests (label e2e): installs the locked npm packages when they
# are missing, then runs node's test runner. Needs Debian's chromium (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/openai ] || [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
if [ -z "${SDW_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    echo "chromium is not installed: run scripts/bootstrap.sh (apt-get install chromium)" >&2
    exit 1
fi
exec node --test --test-concurrency=1 --test-reporter=spec openai.test.mjs a1111.test.mjs cors.test.mjs web.test.mjs controlnet.test.mjs
