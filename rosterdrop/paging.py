"""Paging of every API list: `?limit=` and `?offset=` checked before any query runs.

Below every app (it imports nothing of rosterdrop): the JSON API pages with it and the
OneRoster service bounds its own offsets by the same MAX_OFFSET.

django-ninja's own LimitOffsetPagination bounds `limit` but not `offset`: an offset past a
64-bit integer reached the database and answered 500. Here both are bounded, so a bad value
answers 422 with a JSON detail like any other invalid parameter.
"""

from django.conf import settings
from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

# Far beyond any district's roster, and far below the 64-bit integers SQLite and PostgreSQL take.
MAX_OFFSET = 1_000_000_000


class Paging(LimitOffsetPagination):
    class Input(Schema):
        limit: int = Field(
            settings.NINJA_PAGINATION_PER_PAGE, ge=1, le=settings.NINJA_PAGINATION_MAX_LIMIT
        )
        offset: int = Field(0, ge=0, le=MAX_OFFSET)
