"""What is SQLite's alone, in one place: the connections and their pragmas, the single writer
with group commit and a savepoint per request (`db`), and the writer's cache kept valid by
temporary triggers and `PRAGMA data_version` (`writecache`). The query modules of each area
(relay/storage/*.py) are the SQLite implementation of that area's interface
(relay/storage/areas.py); their SQL, planner hints (`INDEXED BY`) included, is theirs."""
