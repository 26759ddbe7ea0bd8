"""Loading and validating ``imagen.yaml``."""
