#!/usr/bin/env bash
# Makes sure the real services the test suite talks to are there: PostgreSQL and headless Chromium.
set -uo pipefail
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
      || echo "test-services.sh: could not install chromium" >&2
  else
    echo "test-services.sh: chromium/chromedriver missing; install Debian packages chromium chromium-driver" >&2
  fi
fi
exit 0
