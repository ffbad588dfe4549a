-- Migration 15 (SQLite's 0015_writer_cache.sql, a no-op there): the version of what writers'
-- permission-row caches hold (relay/storage/postgres/writecache.py, docs/postgresql.md).
--
-- Every commit that inserts, deletes or updates a watched row (the tables and columns of
-- relay.storage.sqlite.writecache.WATCHED, cascades included) adds one to `version`. Each
-- writer reads it at the start of its transaction and empties its cache when it moved.
-- The triggers are deferred to the commit, so the row's lock is the last one a transaction
-- takes and is held only while it commits: no deadlock with the rows it wrote before, and two
-- processes only wait on each other when both change watched rows at the same moment.
-- A transaction adds one however many rows it changed (a transaction-local setting marks it).

CREATE TABLE writer_cache_version (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO writer_cache_version (id, version) VALUES (1, 0);

CREATE FUNCTION writer_cache_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('relay.writer_cache_bumped', true) IS DISTINCT FROM 'on' THEN
        UPDATE writer_cache_version SET version = version + 1 WHERE id = 1;
        PERFORM set_config('relay.writer_cache_bumped', 'on', true);
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER writer_cache_users AFTER INSERT OR DELETE
    OR UPDATE OF username, display_name, avatar ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_servers AFTER INSERT OR DELETE
    OR UPDATE OF id, owner_id ON servers
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_channels AFTER INSERT OR DELETE
    OR UPDATE OF id, server_id, type, parent_id, permissions_synced, rate_limit_per_user, locked
    ON channels
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_members AFTER INSERT OR DELETE
    OR UPDATE OF server_id, user_id, communication_disabled_until ON members
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_member_roles AFTER INSERT OR DELETE OR UPDATE
    ON member_roles
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_roles AFTER INSERT OR DELETE OR UPDATE ON roles
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_overwrites AFTER INSERT OR DELETE OR UPDATE ON overwrites
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();
CREATE CONSTRAINT TRIGGER writer_cache_dm_recipients AFTER INSERT OR DELETE OR UPDATE
    ON dm_recipients
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION writer_cache_bump();

-- TRUNCATE fires no row trigger (and a constraint trigger cannot be on it): a statement trigger.
CREATE FUNCTION writer_cache_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE writer_cache_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER writer_cache_users_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_servers_truncate AFTER TRUNCATE ON servers
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_channels_truncate AFTER TRUNCATE ON channels
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_members_truncate AFTER TRUNCATE ON members
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_member_roles_truncate AFTER TRUNCATE ON member_roles
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_roles_truncate AFTER TRUNCATE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_overwrites_truncate AFTER TRUNCATE ON overwrites
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
CREATE TRIGGER writer_cache_dm_recipients_truncate AFTER TRUNCATE ON dm_recipients
    FOR EACH STATEMENT EXECUTE FUNCTION writer_cache_truncated();
