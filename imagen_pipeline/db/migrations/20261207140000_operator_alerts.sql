-- Alerts to the operator (imagen_pipeline/alerts/, docs/alerts.md): what was alerted, so
-- every process that alerts (the daemon's sensors, run workers on other hosts) sends each
-- alert once, and the rate limit they share. Only the pipeline reads and writes these
-- tables: web clients (anon, authenticated) get no grant, and row level security is on
-- with no policy, as for the budget holds.

-- One row per alert key: a problem (open until resolved) or a one-shot event (alerted at
-- most once per repeat window; repeats in between are counted and reported with the next).
CREATE TABLE imagen.alerts (
    key        text PRIMARY KEY
               CONSTRAINT alerts_key_check CHECK (char_length(key) BETWEEN 1 AND 200),
    is_open    boolean NOT NULL DEFAULT false,
    title      text NOT NULL,
    alerted_at timestamptz NOT NULL DEFAULT now(),
    repeats    integer NOT NULL DEFAULT 0,
    seen_at    timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE imagen.alerts IS
    'Alert keys the pipeline has alerted the operator about: is_open for a problem not yet '
    'resolved, alerted_at when it was last sent (or held back by the rate limit), repeats '
    'of an event since then.';

-- The rate limit of all processes together, a token bucket of alerts.max_per_hour refilled
-- at that rate, and what it held back (or the webhook failed to take) since the last alert
-- that went out. Always exactly one row.
CREATE TABLE imagen.alert_limit (
    id          boolean PRIMARY KEY DEFAULT true
                CONSTRAINT alert_limit_one_row CHECK (id),
    tokens      double precision NOT NULL DEFAULT 0,
    refilled_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00',
    held_back   integer NOT NULL DEFAULT 0,
    undelivered integer NOT NULL DEFAULT 0
);

COMMENT ON TABLE imagen.alert_limit IS
    'The alerts rate limit (one row): tokens at refilled_at, alerts held back and alerts the '
    'webhook did not take since the last one sent.';

INSERT INTO imagen.alert_limit DEFAULT VALUES;

ALTER TABLE imagen.alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE imagen.alert_limit ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON imagen.alerts, imagen.alert_limit FROM anon, authenticated;
GRANT ALL ON imagen.alerts, imagen.alert_limit TO service_role;
