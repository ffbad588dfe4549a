"""Storage on PostgreSQL (`database = "postgresql://..."`, docs/postgresql.md): the store
(db.py), the SQL translator and connection adapter the shared query modules run through
(translate.py, adapter.py), the schema and its versions (schema.sql, schema.py) and the areas
PostgreSQL needs its own SQL for (search.py)."""
