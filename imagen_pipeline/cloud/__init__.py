"""Cloud sync of finished images (Supabase Storage and ``imagen.images``)."""
