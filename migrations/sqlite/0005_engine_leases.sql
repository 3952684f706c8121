-- One engine per network at a time, across instances sharing the database: the lease row names
-- the owner until it expires. Every new owner gets the next fence; a signing round is stored
-- only under the current fence, so an owner that lost its lease cannot assign a nonce.
CREATE TABLE engine_leases (
    network    TEXT   PRIMARY KEY,
    owner      TEXT   NOT NULL,
    fence      INTEGER NOT NULL CHECK (fence > 0),
    expires_at INTEGER NOT NULL
) STRICT;
