-- Every node looks for lapsed leases each second: only live or lapsed ones are indexed, not the
-- released ('-infinity'), which are most rows once conversations come and go.
CREATE INDEX leases_expiry ON leases (expires_at) WHERE expires_at <> '-infinity';
