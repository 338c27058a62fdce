"""CSV bytes read by polars, never taken for a compressed stream.

`pl.read_csv` inflates bytes that start as gzip, zlib or zstd data do (its magic-number check,
polars-io `is_compressed`), whatever the options: a piece of a district's file, or a batch of
the roster, whose first cell starts with "x" and U+0001, or "x" and a letter of U+0680-U+06BF
(0x78 0xDA in UTF-8), failed with "corrupt deflate stream" or was read as other text. Such bytes
get an empty first line, skipped.
"""

from typing import Any

import polars as pl

# polars-io's magic numbers (gzip; zlib at its three levels; zstd).
COMPRESSED_STARTS = (b"\x1f\x8b", b"\x78\x01", b"\x78\x9c", b"\x78\xda", b"\x28\xb5\x2f\xfd")


def read_csv(data: bytes, **options: Any) -> pl.DataFrame:
    """`pl.read_csv(data, **options)`, the bytes read as the CSV text they are."""
    if data.startswith(COMPRESSED_STARTS):
        eol = str(options.get("eol_char", "\n")).encode()
        return pl.read_csv(eol + data, skip_rows=1, **options)
    return pl.read_csv(data, **options)
