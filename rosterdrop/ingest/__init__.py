"""The import pipeline: unpack, match, decode, read, map, validate, plan, apply, report."""
