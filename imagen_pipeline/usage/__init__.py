"""Cost tracking in ``mai.imagen_usage``."""
