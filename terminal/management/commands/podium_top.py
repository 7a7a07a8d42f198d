import asyncio
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from podium.client import AsyncPodiumClient, PodiumError
from terminal.top import ChannelLayerSource, LiveScreen, PlainScreen, WebSocketSource, run_top
from terminal.top_state import TopState


class Command(BaseCommand):
    help = ("A live view of every model (status, in-flight, req/s, tokens/s, cost/min, latency p50/p95), the "
            "latest runs and the review backlog. q or Ctrl-C quits. Prints a plain block every --interval "
            "seconds when stdout is not a terminal.")

    def add_arguments(self, parser):
        parser.add_argument("--url", default=os.environ.get("PODIUM_URL"),
                            help="watch the Podium at this URL through its websocket (default: this "
                                 "installation's channel layer; env PODIUM_URL)")
        parser.add_argument("--key", default=os.environ.get("PODIUM_API_KEY"),
                            help="API key with the 'events' scope, for --url (env PODIUM_API_KEY)")
        parser.add_argument("--fps", type=float, default=4.0, help="most redraws per second (default 4)")
        parser.add_argument("--interval", type=float, default=5.0,
                            help="seconds between blocks when stdout is not a terminal (default 5)")
        parser.add_argument("--window", type=int, default=60, help="sliding window in seconds (default 60)")
        parser.add_argument("--once", action="store_true", help="print one plain block and exit")

    def handle(self, *args, url, key, fps, interval, window, once, **options):
        if url is None and settings.CHANNEL_LAYERS["default"]["BACKEND"].endswith("InMemoryChannelLayer"):
            raise CommandError(
                "This installation runs in embedded mode: its in-memory channel layer never leaves the server "
                "process. Watch the server through its websocket instead:\n"
                "  manage.py podium_top --url http://127.0.0.1:8000 --key pdm_…   (or PODIUM_URL / PODIUM_API_KEY)")
        if url is not None and not key:
            raise CommandError("--url needs an API key with the 'events' scope: --key pdm_… or PODIUM_API_KEY")
        interactive = sys.stdout.isatty() and not once
        try:
            asyncio.run(self.watch(url, key, fps, interval, window, once, interactive))
        except KeyboardInterrupt:
            pass
        except PodiumError as exc:
            raise CommandError(str(exc)) from None

    async def watch(self, url, key, fps, interval, window, once, interactive):
        client = AsyncPodiumClient(url, key) if url else None
        source = WebSocketSource(client) if client else ChannelLayerSource()
        if interactive:
            screen = LiveScreen(Console(), source.name, fps=fps)
        else:
            screen = PlainScreen(self.stdout, interval=interval)
        try:
            await run_top(source, screen, state=TopState(window_s=window), max_frames=1 if once else None)
        finally:
            if client is not None:
                await client.aclose()
