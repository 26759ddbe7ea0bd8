-- Which server of a backend made an image (a GPU box of a ComfyUI instance with several
-- servers; NULL for backends with one endpoint), and, when the job's backend could not take
-- it and a fallback instance made it, why ("fell back from gpu: 2 servers unreachable").
-- NULL for rows recorded before 2026-12-02.

ALTER TABLE mai.imagen_usage ADD COLUMN backend_server text, ADD COLUMN fallback_reason text;
ALTER TABLE imagen.images ADD COLUMN backend_server text, ADD COLUMN fallback_reason text;

COMMENT ON COLUMN mai.imagen_usage.backend_server IS
    'The server (label) of the backend instance that made the image; NULL: one endpoint.';
COMMENT ON COLUMN imagen.images.backend_server IS
    'The server (label) of the backend instance that made the image; NULL: one endpoint.';
COMMENT ON COLUMN mai.imagen_usage.fallback_reason IS
    'Why a fallback instance made the image (backend_instance is the fallback); NULL: none.';
COMMENT ON COLUMN imagen.images.fallback_reason IS
    'Why a fallback instance made the image (backend is the fallback); NULL: none.';
