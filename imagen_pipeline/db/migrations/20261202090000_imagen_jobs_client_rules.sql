-- What a client may write into imagen.jobs (docs/jobs-queue.md "What a client may write").
--
-- flexsiebels lets any signed-in user INSERT rows, so every column a client can write is
-- checked here, before the pipeline ever reads it: a bad INSERT is refused at once with the
-- name of the constraint it broke. The pipeline checks every row again (and more, such as
-- whether the style and backend exist), so a row that gets past these rules can still end
-- `failed` with a reason, but never stops the queue for other rows.
--
-- Rows that already break a rule are repaired first: the offending value is replaced by a
-- neutral one, an unfinished row is marked failed, and `error` says what was changed.

-- How many times a row may be handed to a run. The pipeline's MAX_ATTEMPTS must equal it
-- (imagen_pipeline_tests/db/test_job_rules.py checks); only ever raise it.
CREATE FUNCTION imagen.max_attempts() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3 $$;

-- backend_opts: a JSON object of at most 16384 bytes, values nested at most 4 levels deep,
-- every key (at any depth) 1-100 letters, digits, '_', '.', ':' or '-' and not starting
-- with '_' (Dagster's serializer reads keys such as "__class__" as structure), every number
-- within +-(2^53 - 1) so it survives any JSON parser. The pipeline applies the same rules
-- (imagen_pipeline/planning.py, check_backend_opts).
CREATE FUNCTION imagen.valid_backend_opts(opts jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_typeof(opts) = 'object'
       AND octet_length(opts::text) <= 16384
       AND NOT jsonb_path_exists(opts, 'lax $.**{5 to last}')
       AND NOT jsonb_path_exists(
               opts,
               'lax $.** ? (@.type() == "object").keyvalue()'
               ' ? (!(@.key like_regex "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"))')
       AND NOT jsonb_path_exists(
               opts,
               'lax $.** ? (@.type() == "number"'
               ' && (@ > 9007199254740991 || @ < -9007199254740991))')
$$;

DO $$
DECLARE
    rule record;
BEGIN
    FOR rule IN
        SELECT * FROM (VALUES
            ('jobs_prompt_check',
             $c$char_length(prompt) BETWEEN 1 AND 8000 AND prompt !~ '[\x01-\x08\x0b-\x1f\x7f]'$c$,
             $r$prompt = coalesce(nullif(left(regexp_replace(prompt, '[\x01-\x08\x0b-\x1f\x7f]', ' ', 'g'), 8000), ''), '(empty)')$r$,
             'prompt: 1 to 8000 characters, no control characters except tab and newline'),
            ('jobs_negative_check',
             $c$char_length(negative) <= 8000 AND negative !~ '[\x01-\x08\x0b-\x1f\x7f]'$c$,
             $r$negative = left(regexp_replace(negative, '[\x01-\x08\x0b-\x1f\x7f]', ' ', 'g'), 8000)$r$,
             'negative: at most 8000 characters, no control characters except tab and newline'),
            ('jobs_style_check',
             $c$char_length(style) <= 100 AND style !~ '[\x01-\x1f\x7f]'$c$,
             $r$style = 'none'$r$,
             'style: at most 100 characters, no control characters'),
            ('jobs_backend_check',
             $c$char_length(backend) <= 100 AND backend !~ '[\x01-\x1f\x7f]'$c$,
             $r$backend = ''$r$,
             'backend: at most 100 characters, no control characters'),
            ('jobs_width_check',
             $c$width IS NULL OR (width BETWEEN 64 AND 4096 AND width % 8 = 0)$c$,
             $r$width = NULL$r$,
             'width: empty, or 64 to 4096 and a multiple of 8'),
            ('jobs_height_check',
             $c$height IS NULL OR (height BETWEEN 64 AND 4096 AND height % 8 = 0)$c$,
             $r$height = NULL$r$,
             'height: empty, or 64 to 4096 and a multiple of 8'),
            ('jobs_steps_check',
             $c$steps IS NULL OR steps BETWEEN 1 AND 200$c$,
             $r$steps = NULL$r$,
             'steps: empty, or 1 to 200'),
            ('jobs_seed_check',
             $c$seed IS NULL OR seed BETWEEN 0 AND 4294967295$c$,
             $r$seed = NULL$r$,
             'seed: empty, or 0 to 4294967295'),
            ('jobs_backend_opts_check',
             $c$imagen.valid_backend_opts(backend_opts)$c$,
             $r$backend_opts = '{}'::jsonb$r$,
             'backend_opts: a JSON object of at most 16384 bytes, nested at most 4 levels, '
             'keys of 1-100 letters, digits, _ . : - not starting with _, numbers within +-(2^53 - 1)'),
            ('jobs_attempts_check',
             $c$attempts BETWEEN 0 AND imagen.max_attempts()$c$,
             $r$attempts = imagen.max_attempts()$r$,
             'attempts: 0 to imagen.max_attempts(); written by the pipeline only')
        ) AS rules(name, check_sql, repair_sql, description)
    LOOP
        EXECUTE format(
            $u$UPDATE imagen.jobs
                  SET %s,
                      status = CASE WHEN status IN ('done', 'canceled') THEN status ELSE 'failed' END,
                      finished_at = coalesce(finished_at, now()),
                      error = left(concat_ws('; ', error, %L), 4000)
                WHERE NOT (%s)$u$,
            rule.repair_sql,
            'changed when the imagen.jobs rules were added: ' || rule.description,
            rule.check_sql);
        EXECUTE format('ALTER TABLE imagen.jobs ADD CONSTRAINT %I CHECK (%s)',
                       rule.name, rule.check_sql);
        EXECUTE format('COMMENT ON CONSTRAINT %I ON imagen.jobs IS %L',
                       rule.name, rule.description);
    END LOOP;
END $$;

-- What a signed-in client may change in a row it owns (its grant is the status column
-- only): cancel an unfinished job, or retry a failed one that has attempts left. Anything
-- else is refused with constraint name jobs_client_transition. The pipeline's own roles
-- are not limited here; their transitions are guarded statements in
-- imagen_pipeline/queue/repository.py.
CREATE FUNCTION imagen.check_client_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user <> 'authenticated' OR NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF NEW.status = 'canceled' AND OLD.status IN ('pending', 'queued', 'running') THEN
        RETURN NEW;
    END IF;
    IF NEW.status = 'pending' AND OLD.status = 'failed' THEN
        IF OLD.attempts >= imagen.max_attempts() THEN
            RAISE EXCEPTION 'status: job % has used all % attempts and cannot be retried',
                  OLD.id, imagen.max_attempts()
                  USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_transition',
                        TABLE = 'jobs', SCHEMA = 'imagen';
        END IF;
        NEW.finished_at := NULL;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'status: a client may set canceled on a pending, queued or running job, '
                    'or pending on a failed one (job % is %)', OLD.id, OLD.status
          USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_transition',
                TABLE = 'jobs', SCHEMA = 'imagen';
END $$;

CREATE TRIGGER jobs_client_transition
    BEFORE UPDATE OF status ON imagen.jobs
    FOR EACH ROW EXECUTE FUNCTION imagen.check_client_transition();

DROP POLICY jobs_owner_cancel ON imagen.jobs;

CREATE POLICY jobs_owner_update ON imagen.jobs
    FOR UPDATE TO authenticated
    USING (owner_user_id = auth.uid() AND status IN ('pending', 'queued', 'running', 'failed'))
    WITH CHECK (owner_user_id = auth.uid() AND status IN ('canceled', 'pending'));

GRANT EXECUTE ON FUNCTION imagen.max_attempts(), imagen.valid_backend_opts(jsonb)
    TO authenticated, service_role;
