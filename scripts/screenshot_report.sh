#!/usr/bin/env bash
# Render a replay HTML report in headless Chromium and save a PNG, to check what people will see.
# usage: scripts/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
# Needs Debian's chromium (apt-get install -y chromium). Nothing is fetched: the report is self-contained,
# and the flags below keep Chromium off the network.
set -euo pipefail

report=${1:?usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${report%.html}.png}
size=${3:-1200x1600}

browser=""
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null 2>&1; then browser=$candidate; break; fi
done
if [[ -z $browser ]]; then
    echo "screenshot_report: chromium not found (apt-get install -y chromium)" >&2
    exit 3
fi

abs_report=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
mkdir -p "$(dirname "$out")"
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

rm -f "$abs_out"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars \
    --screenshot="$abs_out" --window-size="${size/x/,}" "file://$abs_report" >/dev/null 2>&1 || true
if [[ ! -s $abs_out ]]; then
    echo "screenshot_report: chromium wrote no screenshot for $abs_report" >&2
    exit 1
fi
echo "$abs_out"
