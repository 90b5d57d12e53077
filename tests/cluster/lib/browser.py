#!/usr/bin/python3
"""Opens a report page in Debian's headless Chromium (chromium-headless-shell, installed by
scripts/bootstrap) and says what it shows, for the report tests and the screenshots in
docs/bench.md.

    browser.py PAGE.html [--screenshot OUT.png] [--height PIXELS]

prints one JSON object: the page's sections, the ids of what its charts draw (series, cells,
outlines, rows, markers: the gids report_page.py documents) with their fill colours, the legend
and other chart texts, the tables' headers and cells,
the verdict and culprit texts, every console error or uncaught exception, and every request the
page made besides itself (a self-contained page makes none). Exit code 0 when the page loaded,
1 when it did not.

The browser is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: file
descriptors 3 and 4, messages separated by NUL), so no port is opened and nothing but the
standard library is needed. Every wait is bounded; the browser's process group and its profile
folder are removed on every exit.
"""
import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BROWSER = "/usr/bin/chromium-headless-shell"

SUMMARY = r"""
(() => {
  const all = (selector, root) => [...(root || document).querySelectorAll(selector)];
  const text = selector => { const e = document.querySelector(selector);
                             return e ? e.textContent.trim() : null; };
  const charts = {};
  for (const chart of all('div.chart')) {
    const svg = chart.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    charts[chart.id.replace(/^chart-/, '')] = {
      // Our gids use '-'; matplotlib's own group ids use '_' (figure_1, line2d_3, ...).
      ids: all('g[id]', chart).map(g => g.id).filter(id => id.includes('-')),
      // The fill of what each of them draws ("#c62828"), as the browser computed it.
      fills: Object.fromEntries(all('g[id]', chart).filter(g => g.id.includes('-')).map(g => {
        const shape = g.querySelector('path, use, rect');
        return [g.id, shape ? getComputedStyle(shape).fill : null];
      })),
      legend: all('g[id^="legend_"] text', chart).map(t => t.textContent.trim()),
      texts: all('text', chart).map(t => t.textContent.trim()).filter(t => t),
      width: box.width, height: box.height,
    };
  }
  const tables = {};
  for (const table of all('table[id]')) {
    tables[table.id] = {rows: all('tbody tr', table).length,
                        header: all('thead th', table).map(th => th.textContent.trim()),
                        cells: all('tbody tr', table).map(
                            tr => all('td', tr).map(td => td.textContent.trim()))};
  }
  const sections = all('section').map(s => ({id: s.id, data: Object.assign({}, s.dataset)}));
  return {title: document.title, sections, charts, tables,
          verdict: text('#verdict'), culprits: text('#culprits'), summary: text('#summary'),
          failure_culprits: all('[id^="failure-culprits-"]').map(e => e.textContent.trim()),
          failure_summaries: all('[id^="failure-summary-"]').map(e => e.textContent.trim()),
          scripts: all('script').length,
          height: document.documentElement.scrollHeight};
})()
"""


class Browser:
    def __init__(self, timeout):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="cohort-browser-")
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        # Above 10 so that the dup2 onto 3 and 4 in the child cannot clobber one another.
        child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
        child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
        for fd in (to_browser_read, from_browser_write):
            os.close(fd)

        def wire():
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [BROWSER, "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--hide-scrollbars",
             f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=self.log, start_new_session=True)
        os.close(child_read)
        os.close(child_write)
        self.buffer = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close", session=False, wait=False)
                    self.process.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        finally:
            for fd in (self.to_browser, self.from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def _message(self, deadline):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the browser did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    self.log.seek(0)
                    raise RuntimeError("the browser closed the pipe: "
                                       + self.log.read().decode(errors="replace")[-2000:])
                self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method, params=None, session=True, wait=True):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        if not wait:
            return None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method):
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url, width):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send("Target.attachToTarget",
                             {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def problems(self, page_url):
        """Console errors, uncaught exceptions, failed loads and requests for anything else."""
        errors, requests = [], []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console." + params["type"] + ": " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append("exception: " + details.get("exception", {}).get(
                    "description", details.get("text", "")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append("log: " + params["entry"].get("text", ""))
            elif method == "Network.loadingFailed":
                errors.append("load failed: " + params.get("errorText", ""))
            elif method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if url != page_url and not url.startswith("data:"):
                    requests.append(url)
        return errors, requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page")
    parser.add_argument("--screenshot", help="write a PNG of the page's top here")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=0,
                        help="screenshot height in pixels (default: the whole page)")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    if not os.path.exists(BROWSER):
        sys.exit(f"browser.py: {BROWSER} is missing: run scripts/bootstrap")
    url = "file://" + os.path.abspath(args.page)
    browser = Browser(args.timeout)
    try:
        browser.open(url, args.width)
        summary = browser.send("Runtime.evaluate", {"expression": SUMMARY,
                                                    "returnByValue": True})["result"]["value"]
        summary["errors"], summary["requests"] = browser.problems(url)
        if args.screenshot:
            height = min(args.height, summary["height"]) if args.height else summary["height"]
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": args.width, "height": height, "scale": 1}})
            with open(args.screenshot, "wb") as file:
                file.write(base64.b64decode(shot["data"]))
    except (TimeoutError, RuntimeError, OSError) as error:
        print(f"browser.py: {args.page}: {error}", file=sys.stderr)
        return 1
    finally:
        browser.close()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
