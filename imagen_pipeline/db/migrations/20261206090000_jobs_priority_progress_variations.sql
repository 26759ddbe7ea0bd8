-- What a web UI on the queue needs (docs/jobs-queue.md): live progress in the row, a
-- priority, several variations of one prompt, and a retry by the owner of a canceled job.
-- Rows written before this migration keep their meaning: priority 0, count 1, no progress,
-- and their image is variation 0 of their job.

ALTER TABLE imagen.jobs
    ADD COLUMN priority integer NOT NULL DEFAULT 0
        CONSTRAINT jobs_priority_check CHECK (priority BETWEEN -100 AND 100),
    ADD COLUMN count integer NOT NULL DEFAULT 1
        CONSTRAINT jobs_count_check CHECK (count BETWEEN 1 AND 8),
    ADD COLUMN progress real
        CONSTRAINT jobs_progress_check CHECK (progress BETWEEN 0 AND 1),
    ADD COLUMN progress_text text
        CONSTRAINT jobs_progress_text_check CHECK (char_length(progress_text) <= 200);

COMMENT ON CONSTRAINT jobs_priority_check ON imagen.jobs IS
    'priority: -100 to 100 (a signed-in client may set 0 to 10); higher starts first';
COMMENT ON CONSTRAINT jobs_count_check ON imagen.jobs IS
    'count: 1 to 8 images of the one prompt, each with its own seed';
COMMENT ON CONSTRAINT jobs_progress_check ON imagen.jobs IS
    'progress: 0 to 1, or empty before the job starts; written by the pipeline only';
COMMENT ON CONSTRAINT jobs_progress_text_check ON imagen.jobs IS
    'progress_text: at most 200 characters; written by the pipeline only';
COMMENT ON COLUMN imagen.jobs.priority IS
    'Higher starts first; equal priorities start oldest first, in turn per owner.';
COMMENT ON COLUMN imagen.jobs.count IS 'How many images (variations) of the prompt to make.';
COMMENT ON COLUMN imagen.jobs.progress IS
    'Share of the job done, 0 to 1, at most one update a second while it runs; 1 when done.';
COMMENT ON COLUMN imagen.jobs.progress_text IS
    'What the job is doing now ("image 2/4: sampling 12/28", "uploading"); "done" at the end.';
COMMENT ON COLUMN imagen.jobs.image_id IS
    'The job''s first image (variation 0); all of them: imagen.images rows with this job_id.';

-- Pickup order: priority, then age (the claim also takes owners in turn).
DROP INDEX imagen.jobs_pending_idx;
CREATE INDEX jobs_pending_idx ON imagen.jobs (priority DESC, id) WHERE status = 'pending';
-- Jobs in flight per owner, for the per-owner limit of the claim.
CREATE INDEX jobs_inflight_owner_idx ON imagen.jobs (owner_user_id)
    WHERE status IN ('queued', 'running');

-- One image per variation of a job, and per variation of a generating run.
ALTER TABLE imagen.images
    ADD COLUMN variation integer NOT NULL DEFAULT 0
        CONSTRAINT images_variation_check CHECK (variation BETWEEN 0 AND 7),
    DROP CONSTRAINT images_job_id_key,
    ADD CONSTRAINT images_job_variation_key UNIQUE (job_id, variation),
    DROP CONSTRAINT images_run_id_key,
    ADD CONSTRAINT images_run_variation_key UNIQUE (run_id, variation);

COMMENT ON COLUMN imagen.images.variation IS
    'Which of its job''s count images this is, from 0; 0 for a job of one image.';

ALTER TABLE mai.imagen_usage
    ADD COLUMN variation integer NOT NULL DEFAULT 0
        CONSTRAINT imagen_usage_variation_check CHECK (variation BETWEEN 0 AND 7);

COMMENT ON COLUMN mai.imagen_usage.variation IS
    'Which image of its job the call made (imagen.images.variation); 0 for one image.';

-- A signed-in client may insert a priority of 0 to 10 and a count of 1 to 8 (the table's
-- rules), change the priority of its own pending job within 0 to 10, cancel an unfinished
-- job, and retry (set pending) a failed job or a canceled one whose run has stopped, while it
-- has attempts left. The pipeline's own roles are not limited here.
CREATE FUNCTION imagen.check_client_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user = 'authenticated' AND NEW.priority NOT BETWEEN 0 AND 10 THEN
        RAISE EXCEPTION 'priority: a client may set 0 to 10 (got %)', NEW.priority
              USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_priority',
                    TABLE = 'jobs', SCHEMA = 'imagen';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_client_insert
    BEFORE INSERT ON imagen.jobs
    FOR EACH ROW EXECUTE FUNCTION imagen.check_client_insert();

CREATE OR REPLACE FUNCTION imagen.check_client_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user <> 'authenticated' THEN
        RETURN NEW;
    END IF;
    IF NEW.priority IS DISTINCT FROM OLD.priority THEN
        IF NEW.priority NOT BETWEEN 0 AND 10 THEN
            RAISE EXCEPTION 'priority: a client may set 0 to 10 (got %)', NEW.priority
                  USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_priority',
                        TABLE = 'jobs', SCHEMA = 'imagen';
        END IF;
        IF NEW.status <> 'pending' THEN
            RAISE EXCEPTION 'priority: changes only while a job is pending (job % is %)',
                  OLD.id, NEW.status
                  USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_priority',
                        TABLE = 'jobs', SCHEMA = 'imagen';
        END IF;
    END IF;
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF NEW.status = 'canceled' AND OLD.status IN ('pending', 'queued', 'running') THEN
        RETURN NEW;
    END IF;
    IF NEW.status = 'pending' AND OLD.status = 'canceled' AND OLD.finished_at IS NULL THEN
        RAISE EXCEPTION 'status: job % is still being canceled; retry it once its run has stopped',
              OLD.id
              USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_transition',
                    TABLE = 'jobs', SCHEMA = 'imagen';
    END IF;
    IF NEW.status = 'pending' AND OLD.status IN ('failed', 'canceled') THEN
        IF OLD.attempts >= imagen.max_attempts() THEN
            RAISE EXCEPTION 'status: job % has used all % attempts and cannot be retried',
                  OLD.id, imagen.max_attempts()
                  USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_transition',
                        TABLE = 'jobs', SCHEMA = 'imagen';
        END IF;
        NEW.finished_at := NULL;
        NEW.progress := NULL;
        NEW.progress_text := NULL;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'status: a client may set canceled on a pending, queued or running job, '
                    'or pending on a failed or canceled one (job % is %)', OLD.id, OLD.status
          USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_transition',
                TABLE = 'jobs', SCHEMA = 'imagen';
END $$;

DROP TRIGGER jobs_client_transition ON imagen.jobs;
CREATE TRIGGER jobs_client_transition
    BEFORE UPDATE OF status, priority ON imagen.jobs
    FOR EACH ROW EXECUTE FUNCTION imagen.check_client_transition();

DROP POLICY jobs_owner_insert ON imagen.jobs;
CREATE POLICY jobs_owner_insert ON imagen.jobs
    FOR INSERT TO authenticated
    WITH CHECK (owner_user_id = auth.uid() AND status = 'pending' AND priority BETWEEN 0 AND 10);

DROP POLICY jobs_owner_update ON imagen.jobs;
CREATE POLICY jobs_owner_update ON imagen.jobs
    FOR UPDATE TO authenticated
    USING (owner_user_id = auth.uid()
           AND status IN ('pending', 'queued', 'running', 'failed', 'canceled'))
    WITH CHECK (owner_user_id = auth.uid() AND status IN ('canceled', 'pending'));

GRANT INSERT (priority, count) ON imagen.jobs TO authenticated;
GRANT UPDATE (priority) ON imagen.jobs TO authenticated;
