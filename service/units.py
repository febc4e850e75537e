"""Byte units, defined once for the service, its tests and the load tools.

Binary units throughout: S3's part limits (5 MiB .. 5 GiB) and Lambda's
memory setting (MB in the console, MiB in fact) are both powers of two.
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
