# Helpers for the tests of the report page: open it in Debian's headless Chromium (browser.py)
# and check that it loaded with no console error, no request for anything outside it and no
# script, and that every chart has a size; what the page shows is left in a JSON file for the
# test's own checks. With SCREENSHOTS=DIR set, the page's top is saved as DIR/NAME.png (the
# screenshots of docs/bench.md). Source after common.sh.
BROWSER_PY=$SOURCE/tests/cluster/lib/browser.py
REPORT_PY=$SOURCE/python/cohort/report.py
[[ -x /usr/bin/chromium-headless-shell ]] || fail "chromium-headless-shell is missing: run scripts/bootstrap"
/usr/bin/python3 -c "import matplotlib" 2> /dev/null || fail "python3-matplotlib is missing: run scripts/bootstrap"

open_page() {  # open_page PAGE SUMMARY.json [NAME]: what PAGE shows, as JSON, in SUMMARY.json
  local page=$1 summary=$2 name=${3:-}
  local shot=()
  if [[ -n ${SCREENSHOTS:-} && -n $name ]]; then
    mkdir -p "$SCREENSHOTS"
    shot=(--screenshot "$SCREENSHOTS/$name.png" --height "${SCREENSHOT_HEIGHT:-1400}")
  fi
  /usr/bin/python3 "$BROWSER_PY" "$page" "${shot[@]}" > "$summary" || fail "the browser could not open $page"
  /usr/bin/python3 - "$summary" "$page" << 'PY' || fail "$2: the page did not load cleanly (above)"
import json, sys
shown = json.load(open(sys.argv[1]))
problems = []
if shown["errors"]:
    problems.append(f"console errors: {shown['errors']}")
if shown["requests"]:
    problems.append(f"requests for other files (the page must be self-contained): {shown['requests']}")
if shown["scripts"]:
    problems.append(f"{shown['scripts']} script elements")
for name, chart in shown["charts"].items():
    if chart["width"] < 100 or chart["height"] < 100:
        problems.append(f"chart {name} is {chart['width']} x {chart['height']} px")
if not shown["charts"]:
    problems.append("no chart")
for problem in problems:
    print(f"{sys.argv[2]}: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}
