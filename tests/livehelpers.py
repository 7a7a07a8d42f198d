"""Helpers for tests that talk to a live server: session cookies and websocket clients."""
from __future__ import annotations

import asyncio
import json

import websockets
from django.conf import settings
from django.test import Client


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def connect_dashboard(server, cookie: str | None, origin: str | None = None):
    headers = {"Cookie": cookie} if cookie else {}
    return websockets.connect(f"{server.ws_url}/ws/dashboard/", additional_headers=headers,
                              origin=origin or f"http://127.0.0.1:{server.port}", open_timeout=5)


async def next_event(socket, predicate, timeout: float = 5.0) -> dict:
    """The first frame matching predicate, skipping the rest."""
    async def scan():
        while True:
            frame = json.loads(await socket.recv())
            if predicate(frame):
                return frame
    return await asyncio.wait_for(scan(), timeout)
