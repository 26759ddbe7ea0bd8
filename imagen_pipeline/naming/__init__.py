"""The template languages of ``output.naming`` (file names) and ``cloud.path_template``
(Storage object paths)."""
