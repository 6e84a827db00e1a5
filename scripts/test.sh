#!/usr/bin/env bash
# The test command (`make test`): everything the suite needs that pip does not install, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Integration tests use Redis on 127.0.0.1:6379 when it answers, else start their own redis-server.
if ! reachable 127.0.0.1 6379 && ! command -v redis-server >/dev/null; then
  echo "installing redis-server (apt) for the integration tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
fi

# Browser tests drive Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (apt) for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi

# The compat suite drives the official Nango SDKs, pinned in tests/compat/package-lock.json.
if [ ! -d tests/compat/node_modules/@nangohq/node ]; then
  npm ci --prefix tests/compat --no-audit --no-fund --loglevel=error
fi

exec .venv/bin/python -m pytest "$@"
