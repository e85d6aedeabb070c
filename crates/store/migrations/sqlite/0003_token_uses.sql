-- Signed tokens that may be used once (a plan's push of a member's history): a token id seen
-- again before it expires is a replay. Rows go once the token has expired.
CREATE TABLE token_uses (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX token_uses_expiry ON token_uses (expires_at);
