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
