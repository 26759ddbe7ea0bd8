-- Where each recorded cost came from, and costs that are not known.
-- price_source: 'config' (a price table in imagen.yaml), 'built_in' (the adapter's own table),
-- 'free' (a backend that bills nothing), 'unknown' (no price anywhere: cost_usd is NULL),
-- 'not_billed' (a failed call). Rows recorded before this migration keep NULL.

ALTER TABLE mai.imagen_usage
    ALTER COLUMN cost_usd DROP NOT NULL,
    ADD COLUMN price_source text
        CONSTRAINT imagen_usage_price_source_check
        CHECK (price_source IN ('config', 'built_in', 'free', 'unknown', 'not_billed')),
    ADD CONSTRAINT imagen_usage_unknown_cost_check
        CHECK ((cost_usd IS NULL) = (price_source IS NOT DISTINCT FROM 'unknown'));

COMMENT ON COLUMN mai.imagen_usage.cost_usd IS
    'US dollars; NULL when no price is known for the model (price_source unknown).';
COMMENT ON COLUMN mai.imagen_usage.price_source IS
    'Where cost_usd came from: config, built_in, free, unknown or not_billed; NULL before 2026-12-02.';

ALTER TABLE imagen.images
    ALTER COLUMN cost_usd DROP NOT NULL;

COMMENT ON COLUMN imagen.images.cost_usd IS
    'US dollars; NULL when no price is known (see mai.imagen_usage.price_source).';
