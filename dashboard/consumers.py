"""The dashboard websocket: a session (superuser or team member) or an API key with scope `events`
(see viewers.py); subscribe to topics, get a snapshot, then forwarded frames — of the viewer's teams only.

Thin on purpose: topic state, coalescing and sequence numbers live in dashboard/hub.py and
dashboard/protocol.py (the protocol and the close codes are described there); who may watch, and
closing a socket whose viewer lost that right, in dashboard/viewers.py. A bad message gets an error
frame; the connection stays open.
"""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.hub import get_hub
from dashboard.protocol import encode, error_frame, parse_client_message
from dashboard.viewers import CLOSE_NOT_ALLOWED, access_watch, lost_access, viewer_of


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.topics: set[str] = set()
        self.viewer = await viewer_of(self.scope)
        if self.viewer is None:
            await self.close(code=CLOSE_NOT_ALLOWED)  # before accept: the handshake gets HTTP 403
            return
        self.hub = await get_hub()
        self.access_lost_code = None
        await self.accept()
        access_watch(self.channel_layer).watch(self.channel_name, self.viewer)

    async def disconnect(self, code):
        if getattr(self, "viewer", None) is not None:
            access_watch(self.channel_layer).forget(self.channel_name)
        await self._leave_topics()

    async def _leave_topics(self):
        topics, self.topics = getattr(self, "topics", set()), set()
        for topic in topics:
            await self.hub.unsubscribe(topic, self.channel_name, self.viewer.teams)

    async def receive(self, text_data=None, bytes_data=None):
        if self.access_lost_code is not None:
            return
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
                await self.hub.unsubscribe(topic, self.channel_name, self.viewer.teams)
        else:  # subscribe or resync: join first, so no frame after the snapshot is missed
            lost = await database_sync_to_async(lost_access)({self.viewer})
            if lost:  # revoked since the last periodic check: act on nothing
                await self.access_lost({"code": lost[self.viewer]})
                return
            if not await self.hub.may_watch(topic, self.viewer.teams):
                # Another team's run and no run at all get the same answer.
                await self.send(text_data=encode(error_frame("not_found", "No such run.", topic=topic)))
                return
            if topic not in self.topics:
                self.topics.add(topic)
                await self.hub.subscribe(topic, self.channel_name, self.viewer.teams)
            await self.send(text_data=encode(await self.hub.snapshot(topic, self.viewer.teams)))

    async def dashboard_frame(self, message):
        if self.access_lost_code is None:  # frames already queued when access was lost are dropped
            await self.send(text_data=message["text"])

    async def access_lost(self, message):
        if self.access_lost_code is not None:
            return
        self.access_lost_code = message["code"]
        access_watch(self.channel_layer).forget(self.channel_name)
        await self._leave_topics()
        await self.close(code=message["code"])
