"""Storage: SQLite through sqlite-utils; sync query functions per area and the async Store (DESIGN §3)."""
