"""Output: file naming, atomic writes, JSON sidecars, PNG text chunks and previews."""
