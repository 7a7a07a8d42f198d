"""The dashboard websocket: authenticate, join the events group, send a snapshot, forward events."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.snapshots import overview_snapshot
from orchestration.live import EVENTS_GROUP


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "snapshot", "data": await database_sync_to_async(overview_snapshot)()})

    async def disconnect(self, code):
        await self.channel_layer.group_discard(EVENTS_GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def podium_event(self, message):
        await self.send_json(message["event"])
