#!/usr/bin/env bash
# Checks the README's set-up as a new user meets it: a clone of the committed HEAD in an empty temp folder
# (nothing beside it), with Fashion-MNIST and Chromium hidden, then `npm ci && npm run example` and `npm test`.
# Hiding uses a private mount namespace (root + unshare), so the system packages stay installed for everyone
# else; without that, Fashion-MNIST is hidden through FASHION_MNIST_DIR and Chromium stays visible.
# Usage: bash scripts/fresh-clone-check.sh [--keep]   (--keep leaves the temp folder for inspection)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/badnet-fresh-XXXXXX)"
keep=${1:-}
cleanup() { if [ "$keep" != "--keep" ]; then rm -rf "$work"; else echo "left $work"; fi; }
trap cleanup EXIT
git clone -q "$repo" "$work/badnet-defense"
empty="$work/empty"
mkdir -p "$empty"
steps='cd "$1/badnet-defense" && npm ci --no-audit --no-fund && TIMEFORMAT="npm run example: %R s" && time npm run example && npm test'
if [ "$(id -u)" = 0 ] && unshare -m --propagation private true 2>/dev/null; then
  fm=/usr/share/datasets/fashion-mnist
  # shellcheck disable=SC2016
  unshare -m --propagation private bash -c '
    set -euo pipefail
    [ -d '"$fm"' ] && mount --bind "$1/empty" '"$fm"'
    [ -e /usr/bin/chromium ] && mount --bind /dev/null /usr/bin/chromium
    '"$steps" _ "$work"
else
  echo "no private mount namespace: hiding Fashion-MNIST via FASHION_MNIST_DIR only (Chromium stays visible)" >&2
  FASHION_MNIST_DIR="$empty" bash -c "set -euo pipefail; $steps" _ "$work"
fi
