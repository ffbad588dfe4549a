"""Storage: SQLite through sqlite-utils, sync queries per area and the async Store (DESIGN §3)."""
