import asyncio
import os
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from orchestration.access.apikeys import load_key
from orchestration.access.watching import NotAllowed, key_teams, narrowed, team_id_of, user_teams
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
                            help="API key with the 'events' scope, for --url (env PODIUM_API_KEY); without "
                                 "--url, show what this key may watch (its team, or every team)")
        parser.add_argument("--user", help="without --url: show what this user may watch (their teams, or every "
                                           "team for a superuser)")
        parser.add_argument("--team", help="watch this team only (a slug): any team for an operator, one of "
                                           "their own for a member")
        parser.add_argument("--fps", type=float, default=4.0, help="most redraws per second (default 4)")
        parser.add_argument("--interval", type=float, default=5.0,
                            help="seconds between blocks when stdout is not a terminal (default 5)")
        parser.add_argument("--window", type=int, default=60, help="sliding window in seconds (default 60)")
        parser.add_argument("--once", action="store_true", help="print one plain block and exit")

    def handle(self, *args, url, key, fps, interval, window, once, user=None, team=None, **options):
        if url is None and settings.CHANNEL_LAYERS["default"]["BACKEND"].endswith("InMemoryChannelLayer"):
            raise CommandError(
                "This installation runs in embedded mode: its in-memory channel layer never leaves the server "
                "process. Watch the server through its websocket instead:\n"
                "  manage.py podium_top --url http://127.0.0.1:8000 --key pdm_…   (or PODIUM_URL / PODIUM_API_KEY)")
        if url is not None and not key:
            raise CommandError("--url needs an API key with the 'events' scope: --key pdm_… or PODIUM_API_KEY")
        interactive = sys.stdout.isatty() and not once
        # Over the websocket the server scopes what the key sees; locally, the identity given (if any) does.
        teams = None if url else local_teams(key, user, team)
        try:
            asyncio.run(self.watch(url, key, fps, interval, window, once, interactive, team, teams))
        except KeyboardInterrupt:
            pass
        except PodiumError as exc:
            raise CommandError(str(exc)) from None

    async def watch(self, url, key, fps, interval, window, once, interactive, team=None, teams=None):
        client = AsyncPodiumClient(url, key) if url else None
        source = WebSocketSource(client, team) if client else ChannelLayerSource(teams)
        if interactive:
            screen = LiveScreen(Console(), source.name, fps=fps)
        else:
            screen = PlainScreen(self.stdout, interval=interval)
        try:
            await run_top(source, screen, state=TopState(window_s=window), max_frames=1 if once else None)
        finally:
            if client is not None:
                await client.aclose()



def local_teams(key: str | None, username: str | None, team: str | None) -> frozenset[int] | None:
    """The team ids a local podium_top shows (None = every team), as the dashboard would for this identity."""
    try:
        if username:
            user = get_user_model().objects.filter(username=username, is_active=True).first()
            if user is None:
                raise NotAllowed
            teams = user_teams(user)
        elif key:
            info = load_key(key)
            if info is None:
                raise NotAllowed
            teams = key_teams(info.scopes, info.team_id)
        else:
            teams = None  # the database's credentials: an operator on the box
        return narrowed(teams, team_id_of(team) if team else None)
    except NotAllowed:
        raise CommandError("That identity may not watch live events (or not that team).") from None
