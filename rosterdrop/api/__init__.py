"""The operator JSON API (django-ninja): districts, uploads, syncs, issues, the roster."""
