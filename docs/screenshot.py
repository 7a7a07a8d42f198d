"""Regenerate docs/img/control-room.png: the control room's overview under demo traffic.

    .venv/bin/python docs/screenshot.py [--seconds 90] [--rate 6]

What `make demo` does, in a throwaway PODIUM_VAR_DIR on a free loopback port (so a running demo and
its database are left alone): migrate, seed the demo registry, daphne, demo traffic; then Debian's
Chromium (the browser tests' launch flags) logs in as the demo admin and photographs the overview.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "img" / "control-room.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, deadline_s: float = 30) -> None:
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"Podium did not answer at {url} within {deadline_s:.0f} s")


def credentials(var_dir: Path) -> dict[str, str]:
    fields = {}
    for line in (var_dir / "demo-credentials.txt").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def photograph(url: str, username: str, password: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/admin/login/?next=/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{url}/")
        page.wait_for_selector("#model-status tbody tr")
        page.wait_for_timeout(3000)  # a few coalesced deltas, so rates and charts show the traffic
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90, help="demo traffic before the picture (default 90)")
    parser.add_argument("--rate", type=float, default=6, help="demo requests per second (default 6)")
    options = parser.parse_args()

    python = sys.executable
    bin_dir = Path(python).parent
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="podium-screenshot-") as tmp:
        var_dir = Path(tmp)
        env = {name: value for name, value in os.environ.items() if name not in {"DATABASE_URL", "REDIS_URL"}}
        env["PODIUM_VAR_DIR"] = str(var_dir)
        run = {"cwd": ROOT, "env": env, "check": True}
        subprocess.run([python, "manage.py", "migrate", "--noinput", "-v0"], **run)
        subprocess.run([python, "manage.py", "podium_seed_demo"], stdout=subprocess.DEVNULL, **run)
        found = credentials(var_dir)
        processes = [subprocess.Popen([bin_dir / "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),
                                       "config.asgi:application"], cwd=ROOT, env=env)]
        try:
            wait_until_ready(url)
            processes.append(subprocess.Popen(
                [python, "manage.py", "podium_demo_traffic", "--url", url, "--key", found["API key"],
                 "--rate", str(options.rate)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
            time.sleep(options.seconds)
            photograph(url, found["admin user"], found["password"])
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=20)
    print(f"{OUTPUT.relative_to(ROOT)}: {OUTPUT.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
