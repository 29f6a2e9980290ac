-- Shared client-side rate limits (shared_lib.ratelimit.PgRateLimiter): the theoretical arrival time per name.
CREATE TABLE IF NOT EXISTS rate_limits (
    name  text        PRIMARY KEY,
    tat   timestamptz NOT NULL
);
