"""What the pipeline reads and makes, declared as assets so the asset graph shows the lineage
``imagen/jobs`` -> ``imagen/image`` -> ``imagen/storage_object`` -> ``imagen/images``, and
``imagen/image`` -> ``mai/imagen_usage``.

The ``generate_image`` job's steps record materializations of these assets (one event per
image, no partition per image: partition look-ups grow with their count). They are declared
as specs, not computed assets: an image needs a request, which comes from the job's
launchpad, ``imagen generate`` or an ``imagen.jobs`` row, so they are materialized by that
job and not from the asset graph.
"""

from __future__ import annotations

import dagster as dg

GROUP = "imagen"
OWNERS = ["team:imagen"]

JOBS_TABLE = dg.AssetKey(["imagen", "jobs"])
IMAGE = dg.AssetKey(["imagen", "image"])
STORAGE_OBJECT = dg.AssetKey(["imagen", "storage_object"])
IMAGES_TABLE = dg.AssetKey(["imagen", "images"])
USAGE_TABLE = dg.AssetKey(["mai", "imagen_usage"])

_MADE_BY = "Materialized by the generate_image job"

ASSET_SPECS = [
    spec.replace_attributes(group_name=GROUP, owners=OWNERS)
    for spec in (
        dg.AssetSpec(
            JOBS_TABLE,
            description=(
                "The `imagen.jobs` queue in Postgres: a web client (flexsiebels) inserts a row, "
                "the `imagen_jobs_sensor` (or `imagen queue listen`) turns it into one "
                "`generate_image` run and the run reports its progress and result in the row. "
                "Needs `IMAGEN_DATABASE_URL`."
            ),
            kinds={"postgres"},
        ),
        dg.AssetSpec(
            IMAGE,
            deps=[JOBS_TABLE],
            description=(
                "Image files with their JSON sidecars in `output.directory` of imagen.yaml. "
                f"{_MADE_BY} (`write_files`), one materialization per image: path, prompt, "
                "backend, model, seed, cost and a preview."
            ),
            kinds={"file"},
        ),
        dg.AssetSpec(
            STORAGE_OBJECT,
            deps=[IMAGE],
            description=(
                "The image and its sidecar as objects in Supabase Storage, when imagen.yaml has "
                f"a `cloud:` block. {_MADE_BY} (`cloud_sync`), with the object's URL."
            ),
            kinds={"supabase"},
        ),
        dg.AssetSpec(
            IMAGES_TABLE,
            deps=[IMAGE, STORAGE_OBJECT],
            description=(
                "One `imagen.images` row per image (what the web UI lists). "
                f"{_MADE_BY} (`record_usage`), when `IMAGEN_DATABASE_URL` is set."
            ),
            kinds={"postgres"},
        ),
        dg.AssetSpec(
            USAGE_TABLE,
            deps=[IMAGE],
            description=(
                "One `mai.imagen_usage` row per backend call, with its cost and the price's "
                f"source; the budget guard reads it. {_MADE_BY} (`record_usage`), when "
                "`IMAGEN_DATABASE_URL` is set."
            ),
            kinds={"postgres"},
        ),
    )
]
