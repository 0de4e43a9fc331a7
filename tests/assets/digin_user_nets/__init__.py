"""A stand-in for a user's own code: a package importable only through PYTHONPATH=tests/assets."""
