-- The housekeeping sweep finds pending connections whose handshake expired
-- (a user who walked away from a consent page) without reading the others.
CREATE INDEX connections_pending_expiry ON connections (handshake_expires_at) WHERE status = 'pending';
