"""ASGI entry point: /v1 to the lean gateway app, websockets to Channels, the rest to Django."""
import gc
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from asgiref.sync import sync_to_async  # noqa: E402

from api.v1.app import v1_app  # noqa: E402
from dashboard.origin import OriginGuard  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402
from orchestration.providers.pool import close_clients  # noqa: E402
from orchestration.gateway.writer import writer  # noqa: E402
from orchestration.runner.inprocess import runner as inprocess_runner  # noqa: E402
from orchestration.runner.periodic import scheduler  # noqa: E402


async def http_router(scope, receive, send):
    if scope["path"].startswith("/v1/"):
        await v1_app(scope, receive, send)
    else:
        scheduler.ensure_started()  # periodic review expiry and learning; once per process
        await django_asgi_app(scope, receive, send)


async def lifespan(scope, receive, send):
    """Servers that speak ASGI lifespan (uvicorn) get a flush of pending records on shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scheduler.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_clients()
            await sync_to_async(scheduler.stop)()  # first: its stalled-run recovery may hand the runner a run
            # The in-process runner's loop outlives this one: its upstream sessions would be reported unclosed
            # at exit (a no-op when it never ran anything, or with Celery). Not under a run still going: its
            # step would fail instead of resuming after the restart.
            if not inprocess_runner.busy():
                await sync_to_async(inprocess_runner.close_clients, thread_sensitive=False)()
            await sync_to_async(writer.stop)()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter({
    "http": http_router,
    "lifespan": lifespan,
    # Host and Origin first: a handshake without Origin loses its cookies before the session is read.
    "websocket": OriginGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})

# Everything imported so far lives as long as the process: move it out of the collector's sight, so
# full collections stay short instead of pausing the /v1 event loop for tens of milliseconds (p99).
gc.collect()
gc.freeze()
# The event loop shares the GIL with the batched writer's thread; when the loop wakes (epoll, a socket)
# while the writer is busy, it waits up to the switch interval for the GIL: 0.5 ms instead of 5.
sys.setswitchinterval(0.0005)
