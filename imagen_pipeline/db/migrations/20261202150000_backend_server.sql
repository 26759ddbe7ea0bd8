-- Which server of a backend made an image (a GPU box of a ComfyUI instance with several
-- servers); NULL for backends with one endpoint and for rows recorded before 2026-12-02.

ALTER TABLE mai.imagen_usage ADD COLUMN backend_server text;
ALTER TABLE imagen.images ADD COLUMN backend_server text;

COMMENT ON COLUMN mai.imagen_usage.backend_server IS
    'The server (label) of the backend instance that made the image; NULL: one endpoint.';
COMMENT ON COLUMN imagen.images.backend_server IS
    'The server (label) of the backend instance that made the image; NULL: one endpoint.';
