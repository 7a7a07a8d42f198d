"""The pure-asyncio executor. Nothing in this package imports Django."""
