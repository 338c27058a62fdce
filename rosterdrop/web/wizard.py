"""Custom import templates (Istation's flow: kind, sample, mapping, validate, save).

The templates belong to `rosterdrop.custom` (ImportTemplate and its Python API). Until its
wizard pages are built here, this page lists the district's templates, and says so when the
app is not installed.
"""

from django.apps import apps
from django.shortcuts import render

from rosterdrop.web.access import district_view


@district_view
def wizard(request, district):
    templates = None
    if apps.is_installed("rosterdrop.custom"):
        from rosterdrop.custom.models import ImportTemplate

        templates = ImportTemplate.objects.filter(district=district)
    return render(request, "web/wizard.html", {"district": district, "templates": templates})
