"""The custom import template wizard (Istation's flow): kind, sample, mapping, validate, save.

The templates themselves belong to `rosterdrop.custom` (ImportTemplate and its Python API);
until that app exists the page says so instead of guessing at its rules.
"""

from django.shortcuts import render

from rosterdrop.web.access import district_view


def custom_api():
    try:
        from rosterdrop import custom
    except ImportError:
        return None
    return custom


@district_view
def wizard(request, district):
    return render(
        request,
        "web/wizard.html",
        {
            "district": district,
            "available": custom_api() is not None,
        },
    )
