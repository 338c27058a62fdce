"""Every download the console sends: an attachment whose file name is escaped (RFC 6266), so a
quote or a non-ASCII letter in a district's file name cannot break the header."""

from collections.abc import Iterable

from django.http import HttpResponse
from django.utils.http import content_disposition_header

from rosterdrop.csvsafe import csv_text


def attachment(body: str | bytes, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    # The same function FileResponse uses for raw uploads: filename= for plain ASCII,
    # filename*=utf-8''... (percent-encoded) otherwise.
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable]) -> HttpResponse:
    """A formula-safe CSV (`rosterdrop.csvsafe`), header included, as an attachment."""
    return attachment(csv_text([header, *rows]), filename, "text/csv; charset=utf-8")
