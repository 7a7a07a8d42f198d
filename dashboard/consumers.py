"""The dashboard websocket: staff session (or an API key with scope `events`, see key_auth.py); subscribe
to topics, get a snapshot, then forwarded frames.

Thin on purpose: topic state, coalescing and sequence numbers live in dashboard/hub.py and
dashboard/protocol.py (the protocol is described there). A bad message gets an error frame;
the connection stays open.
"""
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.hub import get_hub
from dashboard.key_auth import key_may_watch
from dashboard.protocol import encode, parse_client_message


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        staff = user is not None and user.is_authenticated and user.is_staff
        if not staff and not await key_may_watch(self.scope):  # programs: an API key with scope `events`
            await self.close(code=4403)
            return
        self.topics: set[str] = set()
        self.hub = await get_hub()
        await self.accept()

    async def disconnect(self, code):
        for topic in getattr(self, "topics", ()):
            await self.hub.unsubscribe(topic, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        message, error = parse_client_message(text_data)
        if error:
            await self.send(text_data=encode(error))
            return
        topic = message.get("topic")
        if message["type"] == "ping":
            await self.send(text_data='{"type":"pong"}')
        elif message["type"] == "unsubscribe":
            if topic in self.topics:
                self.topics.discard(topic)
                await self.hub.unsubscribe(topic, self.channel_name)
        else:  # subscribe or resync: join first, so no frame after the snapshot is missed
            if topic not in self.topics:
                self.topics.add(topic)
                await self.hub.subscribe(topic, self.channel_name)
            await self.send(text_data=encode(await self.hub.snapshot(topic)))

    async def dashboard_frame(self, message):
        await self.send(text_data=message["text"])
