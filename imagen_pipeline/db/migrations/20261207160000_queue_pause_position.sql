-- Pause, position and estimate (docs/jobs-queue.md "Pause" and "Where a job stands").
--
-- imagen.queue_state: one row, whether the operator paused the queue (`imagen queue pause`).
-- While paused, the claim (imagen.claim_order() plus the claim statement of
-- imagen_pipeline/queue/repository.py) takes nothing: pending rows stay pending, jobs
-- already queued or running finish. default_backend is imagen.yaml's default_backend as
-- the claimers last used it, so a client's position treats rows without a backend as the
-- claim does.
CREATE TABLE imagen.queue_state (
    id              boolean PRIMARY KEY DEFAULT true
                    CONSTRAINT queue_state_one_row CHECK (id),
    paused          boolean NOT NULL DEFAULT false,
    reason          text
                    CONSTRAINT queue_state_reason_check
                    CHECK (char_length(reason) <= 200 AND reason !~ '[[:cntrl:]]'),
    paused_at       timestamptz,
    paused_by       text,
    default_backend text
);

COMMENT ON TABLE imagen.queue_state IS
    'The queue''s one row: paused (nothing is claimed) with the operator''s reason, since '
    'paused_at, by paused_by; default_backend as the claimers last used it.';
COMMENT ON CONSTRAINT queue_state_reason_check ON imagen.queue_state IS
    'reason: at most 200 characters, no control characters; web clients read it';

INSERT INTO imagen.queue_state DEFAULT VALUES;

ALTER TABLE imagen.queue_state ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON imagen.queue_state FROM anon, authenticated;
GRANT ALL ON imagen.queue_state TO service_role;

-- The line of pending rows, in the order the claim takes them: only rows with attempts
-- left, past their retry_at and not held; by priority (highest first), then owners in turn
-- (turn: the owner's jobs in flight plus the row's rank among the owner's waiting rows;
-- rows without an owner count as one owner), then age. place 1 is claimed next. The claim
-- and imagen.my_queue() both read this one definition. backend: the row's backend, rows
-- without one named by default_backend. One pass over the unsettled rows (windows, no
-- join per owner), so it stays cheap with a long backlog.
CREATE FUNCTION imagen.claim_order(default_backend text)
RETURNS TABLE (id bigint, owner_user_id uuid, priority integer, turn bigint, place bigint,
               backend text, count integer)
LANGUAGE sql STABLE
AS $$
    WITH live AS (
        SELECT p.id, p.owner_user_id, p.priority, p.count, p.status,
               coalesce(nullif(p.backend, ''), claim_order.default_backend, '') AS backend,
               p.status = 'pending' AND p.attempts < imagen.max_attempts()
               AND (p.retry_at IS NULL OR p.retry_at <= now())
               AND coalesce(nullif(p.backend, ''), claim_order.default_backend, '')
                   <> ALL (ARRAY(SELECT h.scope FROM imagen.job_holds AS h))
               AND NOT EXISTS (SELECT 1 FROM imagen.job_holds AS h WHERE h.scope = '*')
                   AS waiting
          FROM imagen.jobs AS p
         WHERE p.status IN ('pending', 'queued', 'running')),
    ranked AS (
        SELECT l.id, l.owner_user_id, l.priority, l.count, l.backend, l.waiting,
               count(*) FILTER (WHERE l.status <> 'pending')
                   OVER (PARTITION BY l.owner_user_id)
               + row_number() OVER (
                   PARTITION BY l.owner_user_id, l.waiting ORDER BY l.priority DESC, l.id)
                   AS turn
          FROM live AS l)
    SELECT r.id, r.owner_user_id, r.priority, r.turn,
           row_number() OVER (ORDER BY r.priority DESC, r.turn, r.id) AS place,
           r.backend, r.count
      FROM ranked AS r
     WHERE r.waiting
$$;

REVOKE ALL ON FUNCTION imagen.claim_order(text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION imagen.claim_order(text) TO service_role;

-- Recent durations per backend, for the estimate: the newest done jobs of a backend by
-- finished_at.
CREATE INDEX jobs_done_backend_idx ON imagen.jobs (backend, finished_at DESC)
    WHERE status = 'done';

-- Whether the queue is paused, why and since when, and how many jobs wait and run (counts
-- only). For web clients; SECURITY DEFINER because they cannot read imagen.queue_state.
CREATE FUNCTION imagen.queue_status()
RETURNS TABLE (paused boolean, reason text, paused_at timestamptz, pending bigint,
               in_flight bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
    SELECT coalesce(s.paused, false),
           CASE WHEN s.paused THEN s.reason END,
           CASE WHEN s.paused THEN s.paused_at END,
           (SELECT count(*) FROM imagen.jobs AS j WHERE j.status = 'pending'),
           (SELECT count(*) FROM imagen.jobs AS j WHERE j.status IN ('queued', 'running'))
      FROM (SELECT true) AS one (x)
      LEFT JOIN imagen.queue_state AS s ON true
$$;

-- The caller's pending and queued jobs (owner_user_id = auth.uid()) and where each stands:
--   position        pending: its place in the line (1: claimed next, as the claim orders);
--                   queued (claimed, its run has not started): 0; NULL: not in the line
--                   now (held while a part is away, or waiting out retry_at after an
--                   interruption; progress_text says why).
--   jobs_ahead      jobs that start before it: queued jobs plus the pending ones ahead in
--                   the line (for a queued job: queued jobs of higher priority, or equal
--                   priority and older). Counts only: no other owner's id or prompt.
--   estimated_start now() + s * images_ahead / parallel, where s is the median seconds per
--                   image (finished_at - started_at, divided by count) of the backend's
--                   20 newest done jobs, images_ahead the images of its backend still to
--                   make before it (running jobs' remaining share by progress, queued
--                   jobs, pending jobs ahead in the line) and parallel the backend's
--                   running jobs (at least 1). NULL while the queue is paused, while the
--                   job is not in the line, or before the backend has a done job.
CREATE FUNCTION imagen.my_queue()
RETURNS TABLE (id bigint, status text, "position" bigint, jobs_ahead bigint,
               estimated_start timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
    WITH state AS (
        SELECT coalesce(bool_or(s.paused), false) AS paused,
               max(s.default_backend) AS default_backend
          FROM imagen.queue_state AS s),
    mine AS (
        SELECT j.id, j.status, j.priority, j.count,
               coalesce(nullif(j.backend, ''), state.default_backend, '') AS backend
          FROM imagen.jobs AS j, state
         WHERE j.owner_user_id = auth.uid() AND j.status IN ('pending', 'queued')),
    line AS (
        SELECT o.id, o.place,
               sum(o.count) OVER (PARTITION BY o.backend ORDER BY o.place) - o.count
                   AS images_before
          FROM state, imagen.claim_order(state.default_backend) AS o
         WHERE EXISTS (SELECT 1 FROM mine WHERE mine.status = 'pending')),
    flight AS (
        SELECT j.id, j.status, j.priority,
               coalesce(nullif(j.backend, ''), state.default_backend, '') AS backend,
               CASE WHEN j.status = 'running'
                    THEN j.count * (1 - coalesce(j.progress, 0)) ELSE j.count END AS images
          FROM imagen.jobs AS j, state
         WHERE j.status IN ('queued', 'running')),
    pace AS MATERIALIZED (
        SELECT b.backend,
               greatest(1, (SELECT count(*) FROM flight AS f
                             WHERE f.backend = b.backend AND f.status = 'running')) AS parallel,
               (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY r.seconds)
                  FROM (SELECT x.seconds FROM (
                           (SELECT d.finished_at,
                                   extract(epoch FROM d.finished_at - d.started_at) / d.count
                                       AS seconds
                              FROM imagen.jobs AS d
                             WHERE d.status = 'done' AND d.backend = b.backend
                               AND d.started_at IS NOT NULL
                             ORDER BY d.finished_at DESC LIMIT 20)
                           UNION ALL
                           (SELECT d.finished_at,
                                   extract(epoch FROM d.finished_at - d.started_at) / d.count
                              FROM imagen.jobs AS d
                             WHERE b.is_default AND d.status = 'done' AND d.backend = ''
                               AND d.started_at IS NOT NULL
                             ORDER BY d.finished_at DESC LIMIT 20)) AS x
                        ORDER BY x.finished_at DESC LIMIT 20) AS r) AS seconds_per_image
          FROM (SELECT DISTINCT mine.backend,
                       mine.backend <> '' AND mine.backend = state.default_backend AS is_default
                  FROM mine, state) AS b),
    standing AS (
        SELECT m.id, m.status, m.backend,
               CASE WHEN m.status = 'queued' THEN 0 ELSE l.place END AS place,
               CASE WHEN m.status = 'queued'
                    THEN (SELECT count(*) FROM flight AS f
                           WHERE f.status = 'queued' AND f.id <> m.id
                             AND (f.priority > m.priority
                                  OR (f.priority = m.priority AND f.id < m.id)))
                    ELSE (SELECT count(*) FROM flight AS f WHERE f.status = 'queued')
                         + l.place - 1 END AS jobs_ahead,
               CASE WHEN m.status = 'queued'
                    THEN (SELECT coalesce(sum(f.images), 0) FROM flight AS f
                           WHERE f.backend = m.backend
                             AND (f.status = 'running'
                                  OR (f.id <> m.id AND (f.priority > m.priority
                                      OR (f.priority = m.priority AND f.id < m.id)))))
                    ELSE (SELECT coalesce(sum(f.images), 0) FROM flight AS f
                           WHERE f.backend = m.backend) + l.images_before END AS images_ahead
          FROM mine AS m
          LEFT JOIN line AS l ON l.id = m.id)
    SELECT s.id, s.status, s.place,
           CASE WHEN s.place IS NOT NULL THEN s.jobs_ahead END,
           CASE WHEN NOT state.paused AND s.place IS NOT NULL
                THEN now() + make_interval(
                         secs => p.seconds_per_image * s.images_ahead / p.parallel) END
      FROM standing AS s
      JOIN pace AS p ON p.backend = s.backend
      CROSS JOIN state
     ORDER BY s.place IS NULL, s.place, s.id
$$;

REVOKE ALL ON FUNCTION imagen.queue_status(), imagen.my_queue() FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION imagen.queue_status(), imagen.my_queue()
    TO authenticated, service_role;
