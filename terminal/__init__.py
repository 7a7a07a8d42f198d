"""The terminal tools' logic: `podium_top`, `podium_run`, `podium_status` are thin doors into here."""
