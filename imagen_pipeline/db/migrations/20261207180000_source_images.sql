-- Images from images (docs/jobs-queue.md "Source images", docs/database.md).
--
-- imagen.jobs gains the request's source images: source_images (imagen.images ids, in
-- order), mask (one more id), mode and strength. A signed-in client may name only images it
-- owns: the trigger jobs_client_sources looks them up as the client (row level security
-- shows it its own rows only), so another owner's image and a missing one are refused alike,
-- with the constraint name jobs_client_sources and without saying which of the two it was.
-- The pipeline checks again when the job runs (a row the service role wrote, an image
-- deleted since), and fails the job with a sentence before any backend call.
--
-- imagen.image_parents: which images an image was made from, written in the transaction
-- that records the child's imagen.images row; readable by the owner of the child.

ALTER TABLE imagen.jobs
    ADD COLUMN source_images bigint[] NOT NULL DEFAULT '{}'
        CONSTRAINT jobs_source_images_check CHECK (
            cardinality(source_images) <= 16
            AND coalesce(array_ndims(source_images), 1) = 1
            AND array_position(source_images, NULL) IS NULL
            AND 0 < ALL (source_images)),
    ADD COLUMN mask bigint
        CONSTRAINT jobs_mask_check CHECK (mask > 0),
    ADD COLUMN mode text
        CONSTRAINT jobs_mode_check CHECK (mode IN ('edit', 'img2img')),
    ADD COLUMN strength double precision
        CONSTRAINT jobs_strength_check CHECK (strength BETWEEN 0 AND 1),
    ADD CONSTRAINT jobs_source_fields_check CHECK (
        cardinality(source_images) > 0 OR (mask IS NULL AND mode IS NULL AND strength IS NULL));

COMMENT ON CONSTRAINT jobs_source_images_check ON imagen.jobs IS
    'source_images: at most 16 imagen.images ids, each positive, no empty entries';
COMMENT ON CONSTRAINT jobs_mask_check ON imagen.jobs IS 'mask: empty, or an imagen.images id';
COMMENT ON CONSTRAINT jobs_mode_check ON imagen.jobs IS 'mode: empty, edit or img2img';
COMMENT ON CONSTRAINT jobs_strength_check ON imagen.jobs IS 'strength: empty, or 0 to 1';
COMMENT ON CONSTRAINT jobs_source_fields_check ON imagen.jobs IS
    'mask, mode and strength: only with source images';
COMMENT ON COLUMN imagen.jobs.source_images IS
    'imagen.images ids to start from, in order (a client: its own images only); empty: text only.';
COMMENT ON COLUMN imagen.jobs.mask IS 'imagen.images id of the edit''s mask (white: change).';
COMMENT ON COLUMN imagen.jobs.mode IS 'edit or img2img; empty: the backend''s default.';
COMMENT ON COLUMN imagen.jobs.strength IS 'For img2img: 0 (keep the source) to 1.';

CREATE FUNCTION imagen.check_client_sources() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    IF current_user <> 'authenticated' THEN
        RETURN NEW;
    END IF;
    SELECT named.id INTO missing
      FROM unnest(NEW.source_images || coalesce(ARRAY[NEW.mask], '{}')) AS named(id)
     WHERE NOT EXISTS (SELECT 1 FROM imagen.images i
                        WHERE i.id = named.id AND i.owner_user_id = NEW.owner_user_id)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'source_images: image % is not one of your images', missing
              USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_sources',
                    TABLE = 'jobs', SCHEMA = 'imagen';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_client_sources
    BEFORE INSERT OR UPDATE OF source_images, mask ON imagen.jobs
    FOR EACH ROW EXECUTE FUNCTION imagen.check_client_sources();

GRANT INSERT (source_images, mask, mode, strength) ON imagen.jobs TO authenticated;

CREATE TABLE imagen.image_parents (
    child_id   bigint NOT NULL REFERENCES imagen.images (id) ON DELETE CASCADE,
    position   integer NOT NULL CONSTRAINT image_parents_position_check
               CHECK (position BETWEEN 0 AND 16),
    role       text NOT NULL DEFAULT 'source'
               CONSTRAINT image_parents_role_check CHECK (role IN ('source', 'mask')),
    parent_id  bigint REFERENCES imagen.images (id) ON DELETE SET NULL,
    sha256     text NOT NULL CONSTRAINT image_parents_sha256_check
               CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    origin     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (child_id, role, position)
);

COMMENT ON TABLE imagen.image_parents IS
    'Which images each image was made from: parent_id (empty for a file outside imagen.images) '
    'with the sha256 of the bytes sent, in request order; the mask as role mask.';

CREATE INDEX image_parents_parent_idx ON imagen.image_parents (parent_id);

ALTER TABLE imagen.image_parents ENABLE ROW LEVEL SECURITY;

CREATE POLICY image_parents_owner_select ON imagen.image_parents
    FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM imagen.images i
                    WHERE i.id = child_id AND i.owner_user_id = auth.uid()));

GRANT SELECT ON imagen.image_parents TO authenticated;
GRANT ALL ON imagen.image_parents TO service_role;
