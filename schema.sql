-- media-gateway schema. Every statement is idempotent: `media-gateway migrate`
-- applies this file as a whole, and running it again changes nothing.

CREATE TABLE IF NOT EXISTS media_objects (
    key          text PRIMARY KEY,
    owner_id     text NOT NULL,
    visibility   text NOT NULL DEFAULT 'private',
    content_type text,
    filename     text,
    status       text NOT NULL DEFAULT 'ready',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT media_objects_key_length CHECK (octet_length(key) BETWEEN 1 AND 1024),
    CONSTRAINT media_objects_visibility CHECK (visibility IN ('private', 'public')),
    CONSTRAINT media_objects_status CHECK (status IN ('pending', 'ready'))
);

CREATE INDEX IF NOT EXISTS media_objects_owner_id ON media_objects (owner_id);

CREATE TABLE IF NOT EXISTS media_grants (
    key        text NOT NULL REFERENCES media_objects (key) ON DELETE CASCADE ON UPDATE CASCADE,
    grantee_id text NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, grantee_id)
);

CREATE INDEX IF NOT EXISTS media_grants_grantee_id ON media_grants (grantee_id);

-- Bytes in the object: declared by an upload while it is pending, as stored once it is ready.
ALTER TABLE media_objects ADD COLUMN IF NOT EXISTS size bigint;

-- `media-gateway uploads prune` finds pending rows by age. The index contains pending rows only, so it stays
-- small, but building it the first time reads the whole table and blocks writes to it meanwhile.
CREATE INDEX IF NOT EXISTS media_objects_pending_created_at ON media_objects (created_at) WHERE status = 'pending';

-- Every change to an object or a grant sends its key on channel media_gateway_changes,
-- so gateways that cache decisions evict it at once. TRUNCATE sends an empty payload:
-- keys are never empty, so it means "forget everything".
CREATE OR REPLACE FUNCTION media_gateway_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('media_gateway_changes', '');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('media_gateway_changes', NEW.key);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('media_gateway_changes', OLD.key);
    ELSE
        PERFORM pg_notify('media_gateway_changes', OLD.key);
        IF NEW.key IS DISTINCT FROM OLD.key THEN
            PERFORM pg_notify('media_gateway_changes', NEW.key);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS media_objects_notify_change ON media_objects;
CREATE TRIGGER media_objects_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON media_objects
    FOR EACH ROW EXECUTE FUNCTION media_gateway_notify_change();

DROP TRIGGER IF EXISTS media_objects_notify_truncate ON media_objects;
CREATE TRIGGER media_objects_notify_truncate
    AFTER TRUNCATE ON media_objects
    FOR EACH STATEMENT EXECUTE FUNCTION media_gateway_notify_change();

DROP TRIGGER IF EXISTS media_grants_notify_change ON media_grants;
CREATE TRIGGER media_grants_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON media_grants
    FOR EACH ROW EXECUTE FUNCTION media_gateway_notify_change();

DROP TRIGGER IF EXISTS media_grants_notify_truncate ON media_grants;
CREATE TRIGGER media_grants_notify_truncate
    AFTER TRUNCATE ON media_grants
    FOR EACH STATEMENT EXECUTE FUNCTION media_gateway_notify_change();
