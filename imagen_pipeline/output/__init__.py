"""Output: the final store step, JSON sidecars, PNG text chunks and previews."""
