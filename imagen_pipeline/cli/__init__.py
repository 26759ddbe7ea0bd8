"""The ``imagen`` command line."""
