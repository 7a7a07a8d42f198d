"""The reference deployment's files: the TLS proxy (deploy/nginx/podium.conf) and the web server's settings
(config/gunicorn.py). The proxy is checked by nginx itself; serving through it against the real stack is
tests/production/test_production_stack.py's."""
from __future__ import annotations

import runpy
import ssl
import subprocess
import sys

import pytest

from tests.production.stack import ROOT, NginxProxy, nginx_unavailable

GUNICORN_SETTINGS = ROOT / "config/gunicorn.py"


@pytest.fixture(scope="module")
def nginx_ready():
    reason = nginx_unavailable()
    if reason:
        pytest.skip(reason)


def test_the_reference_nginx_config_passes_nginx_t_with_a_self_signed_certificate(nginx_ready, tmp_path):
    proxy = NginxProxy(tmp_path)
    check = proxy.check()
    output = check.stdout + check.stderr
    assert check.returncode == 0, output
    assert "syntax is ok" in output and "test is successful" in output


def test_the_reference_nginx_config_starts_and_redirects_plain_http_to_https(nginx_ready, tmp_path):
    """It starts with nothing behind it: port 80 sends browsers to HTTPS, TLS answers (502 until Podium is up)."""
    import httpx

    proxy = NginxProxy(tmp_path, upstream_port=9).start()  # nothing listens on port 9
    try:
        redirect = httpx.get(f"http://127.0.0.1:{proxy.http_port}/v1/models", headers={"host": "podium.example.com"})
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://podium.example.com/v1/models"
        answer = httpx.get(f"{proxy.url}/healthz", verify=ssl.create_default_context(cafile=str(proxy.cert)))
        assert answer.status_code == 502
    finally:
        proxy.stop()


def settings_with(monkeypatch, **env) -> dict:
    for name in ("WEB_PROCESSES", "REDIS_URL", "WEB_GRACEFUL_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_SETTINGS))


def test_the_web_server_runs_one_uvicorn_worker_per_core_with_redis(monkeypatch):
    import os

    settings = settings_with(monkeypatch, REDIS_URL="redis://127.0.0.1:6379/0")
    assert settings["workers"] == len(os.sched_getaffinity(0))
    assert settings_with(monkeypatch, REDIS_URL="redis://x", WEB_PROCESSES="3")["workers"] == 3
    assert settings["wsgi_app"] == "config.asgi:application" and settings["preload_app"] is False
    worker = settings["worker_class"]
    assert worker.__mro__[1].__name__ == "UvicornWorker"
    # Podium decides which X-Forwarded-For to believe (PODIUM_TRUSTED_PROXIES), not the server.
    assert worker.CONFIG_KWARGS["proxy_headers"] is False and settings["forwarded_allow_ips"] == ""
    assert worker.CONFIG_KWARGS["lifespan"] == "on"
    assert settings["control_socket_disable"] is True  # two servers of one user must not share a control socket


def test_without_redis_the_web_server_is_one_process_and_refuses_more(monkeypatch):
    assert settings_with(monkeypatch)["workers"] == 1  # embedded mode: in-memory channel layer, in-process runner
    with pytest.raises(SystemExit, match="needs REDIS_URL"):
        settings_with(monkeypatch, WEB_PROCESSES="2")


def test_gunicorn_accepts_the_settings_file():
    """gunicorn's own parser reads the file (every name a known setting, every value valid)."""
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_SETTINGS), "--print-config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:6379/0", "WEB_PROCESSES": "2"})
    assert done.returncode == 0, done.stderr
    printed = {name.strip(): value.strip() for name, value in
               (line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)}
    assert printed["workers"] == "2"
    assert "PodiumUvicornWorker" in printed["worker_class"]
    assert printed["control_socket_disable"] == "True"
