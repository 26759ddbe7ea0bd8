-- The check of a client's source images, whatever shape source_images has
-- (docs/jobs-queue.md "Source images").
--
-- imagen.check_client_sources() appended the mask to source_images with ||, which raised
-- "cannot concatenate incompatible arrays" for a multi-dimensional source_images: the
-- client got that error instead of the rule jobs_source_images_check it broke. And it kept
-- the first named id not among the client's images, an empty entry included, so which
-- refusal a row got depended on the order of its entries. Now the named ids are read one by
-- one (unnest flattens any shape), empty entries skipped: another owner's or a missing
-- image is refused here (jobs_client_sources) wherever it stands, and the shapes the check
-- constraints refuse reach them.

CREATE OR REPLACE FUNCTION imagen.check_client_sources() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    IF current_user <> 'authenticated' THEN
        RETURN NEW;
    END IF;
    SELECT named.id INTO missing
      FROM (SELECT unnest(NEW.source_images) UNION ALL SELECT NEW.mask) AS named(id)
     WHERE named.id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM imagen.images i
                        WHERE i.id = named.id AND i.owner_user_id = NEW.owner_user_id)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'source_images: image % is not one of your images', missing
              USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_client_sources',
                    TABLE = 'jobs', SCHEMA = 'imagen';
    END IF;
    RETURN NEW;
END $$;
