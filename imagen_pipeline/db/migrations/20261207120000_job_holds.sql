-- Outages are not a job's fault (docs/jobs-queue.md "When a part is away").
--
-- imagen.job_holds: what the pipeline cannot run right now, kept by the jobs sensor on every
-- tick (queue/holds.py). A hold on scope '*' (kind broker: the run launcher's broker is
-- unreachable) keeps every pending row pending; a hold on a backend instance's name (kind
-- worker: no worker serves its queue; kind backend: its server is down) keeps the rows for
-- that backend pending. Both claimers, the sensor and the NOTIFY listener, skip held rows,
-- and each held row's progress_text says why it waits (the hold's public text).
CREATE TABLE imagen.job_holds (
    kind       text NOT NULL
               CONSTRAINT job_holds_kind_check CHECK (kind IN ('broker', 'worker', 'backend')),
    scope      text NOT NULL,
    public     text NOT NULL CONSTRAINT job_holds_public_check CHECK (char_length(public) <= 200),
    detail     text NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, scope)
);

COMMENT ON TABLE imagen.job_holds IS
    'Why pending imagen.jobs rows are not started now: scope * (all rows) or a backend '
    'instance name; public is what the rows'' owners read, detail is for the operator.';

ALTER TABLE imagen.job_holds ENABLE ROW LEVEL SECURITY;
GRANT ALL ON imagen.job_holds TO service_role;

-- How many times a job's run was lost to an outage (its attempt given back each time). A
-- job interrupted imagen.max_interruptions() times fails, so a request that itself brings
-- its worker down cannot loop for ever.
ALTER TABLE imagen.jobs
    ADD COLUMN interruptions integer NOT NULL DEFAULT 0
        CONSTRAINT jobs_interruptions_check CHECK (interruptions >= 0);

COMMENT ON COLUMN imagen.jobs.interruptions IS
    'Runs of this job lost to an outage (broker, worker, database, backend); written by the '
    'pipeline only; these do not count as attempts.';

-- attempts counts what a job's own requests used (an attempt given back is taken off), so
-- the runs of a job are numbered by claims instead: every claim adds one, nothing takes one
-- off, and a run's imagen/job_attempt tag, its run key and its right to the row use it.
ALTER TABLE imagen.jobs
    ADD COLUMN claims integer NOT NULL DEFAULT 0
        CONSTRAINT jobs_claims_check CHECK (claims >= 0);

UPDATE imagen.jobs SET claims = attempts;

COMMENT ON COLUMN imagen.jobs.claims IS
    'How many times the pipeline took this job to run; the number of its latest claim, which '
    'its runs carry (imagen/job_attempt); written by the pipeline only.';

-- A row sent back after an outage is claimed again no sooner than retry_at (5 s after the
-- first interruption, doubling up to 5 min), so an outage nothing holds (Storage away) does
-- not turn into a run every tick.
ALTER TABLE imagen.jobs ADD COLUMN retry_at timestamptz;

COMMENT ON COLUMN imagen.jobs.retry_at IS
    'A pending row sent back after an outage is not claimed before this time; written by '
    'the pipeline only.';

CREATE FUNCTION imagen.max_interruptions() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10 $$;

GRANT EXECUTE ON FUNCTION imagen.max_interruptions() TO authenticated, service_role;
