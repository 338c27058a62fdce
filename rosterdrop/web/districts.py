"""Operators create a district in the console (edited on its overview's settings form)."""

from django.contrib import messages
from django.shortcuts import redirect, render

from rosterdrop.accounts.decorators import audit_admin, operator_view
from rosterdrop.web.forms import DistrictCreateForm


@operator_view
def new_district(request):
    form = DistrictCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        district = form.save()
        audit_admin(request, f"created district {district.slug} ({district.format})")
        messages.success(request, f"{district.name} created. Next: add its SFTP login.")
        return redirect("web:logins", district.slug)
    return render(request, "web/district_new.html", {"form": form})
