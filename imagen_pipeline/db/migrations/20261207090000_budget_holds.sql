-- Budget holds: what a run is about to spend, counted by the budget guard until the call's
-- usage row is written (usage/budget.py). Every check and hold happens under one advisory
-- lock, so runs checking at the same moment cannot together pass a limit that each alone
-- would pass, and the images a request asks for (count) are held before the first is made.
-- A hold left by a run that died expires after its expires_at.

CREATE TABLE mai.imagen_budget_holds (
    run_id           text NOT NULL,
    variation        integer NOT NULL
                     CONSTRAINT imagen_budget_holds_variation_check
                     CHECK (variation BETWEEN 0 AND 7),
    backend_instance text NOT NULL,
    owner_user_id    uuid,
    cost_usd         numeric(12, 6) NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (run_id, variation)
);

COMMENT ON TABLE mai.imagen_budget_holds IS
    'Estimated cost of backend calls checked against the budget and not yet recorded in '
    'mai.imagen_usage; the pipeline deletes each hold when it records the call.';

CREATE INDEX imagen_budget_holds_expires_idx ON mai.imagen_budget_holds (expires_at);

-- Per-owner daily limits (budget.per_owner) sum an owner's usage of the day.
CREATE INDEX imagen_usage_owner_created_idx ON mai.imagen_usage (owner_user_id, created_at);

ALTER TABLE mai.imagen_budget_holds ENABLE ROW LEVEL SECURITY;
GRANT ALL ON mai.imagen_budget_holds TO service_role;
