"""Supabase Storage: the client every part that reads or writes an object uses, and its
errors. It knows buckets and objects, not images, so it sits below the parts that handle
images (the generate path, cloud sync)."""
