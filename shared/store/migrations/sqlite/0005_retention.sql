-- Retention: the reaper finds closed sessions by when they closed.
CREATE INDEX sessions_closed ON sessions (ended_at) WHERE status != 'active';
