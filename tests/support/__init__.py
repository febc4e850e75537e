"""Shared test machinery: the local AWS endpoint, S3 helpers and the archive checker.

Importable as ``tests.support`` because ``tests/`` is a package (pytest puts the
repository root on ``sys.path``).
"""
