import codecs
import zoneinfo

from django import forms

from rosterdrop.custom.models import ImportTemplate
from rosterdrop.custom.templates import KIND_TITLES, name_problems
from rosterdrop.districts.models import District, Pause
from rosterdrop.formats import FORMATS
from rosterdrop.intake.models import PERMISSIONS
from rosterdrop.notify.models import Subscription


def encoding_name(value: str) -> str:
    """A blank or a codec name Python knows (a typo would fail every later import)."""
    value = value.strip()
    try:
        value and codecs.lookup(value)
    except LookupError:
        raise forms.ValidationError(f"{value} is not an encoding Python knows.") from None
    return value


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Django's documented pattern for several files in one field."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, list | tuple):
            return [super(MultipleFileField, self).clean(d, initial) for d in data]
        return [super().clean(data, initial)]


class UploadForm(forms.Form):
    files = MultipleFileField(help_text="One .zip, or the CSV files of one export together.")


class DistrictSettingsForm(forms.ModelForm):
    format = forms.ChoiceField(
        choices=[(slug, f"{spec.title} ({slug})") for slug, spec in FORMATS.items()],
        help_text="Custom import templates: the district's own files, set up on its "
        "Import templates page.",
    )

    class Meta:
        model = District
        fields = [
            "name",
            "format",
            "paused",
            "expected_every_hours",
            "strict",
            "admins_decide_holds",
            "quiet_period_seconds",
            "removal_threshold",
            "fallback_encoding",
            "time_zone",
            "upload_quota_bytes",
        ]
        labels = {
            "quiet_period_seconds": "Quiet period (seconds)",
            "expected_every_hours": "Files expected every (hours)",
            "removal_threshold": "Removal threshold (0-1, blank = default)",
            "strict": "Strict (the specification to the letter)",
            "upload_quota_bytes": "Upload quota (bytes, blank = default)",
        }

    def clean_removal_threshold(self):
        value = self.cleaned_data["removal_threshold"]
        if value is not None and not 0 <= value <= 1:
            raise forms.ValidationError("Give a share between 0 and 1, e.g. 0.1 for 10 %.")
        return value

    def clean_fallback_encoding(self):
        return encoding_name(self.cleaned_data["fallback_encoding"])


class DistrictCreateForm(DistrictSettingsForm):
    """A new district: its slug too, which names its folder and URLs for good."""

    class Meta(DistrictSettingsForm.Meta):
        fields = ["slug", *DistrictSettingsForm.Meta.fields]
        help_texts = {"slug": "Letters, digits and dashes; it names the district's folder."}


class SubscriptionForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["email", "on_success"]
        labels = {"on_success": "Also when a sync succeeds"}


class TemplateKindForm(forms.Form):
    kind = forms.ChoiceField(choices=list(KIND_TITLES.items()), widget=forms.RadioSelect)


class TemplateSampleForm(forms.Form):
    sample = forms.FileField(help_text="One CSV file as your SIS exports it; a few rows suffice.")
    delimiter = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Find it in the header"),
            (",", "Comma ,"),
            (";", "Semicolon ;"),
            ("\t", "Tab"),
            ("|", "Pipe |"),
        ],
    )
    encoding = forms.CharField(
        required=False,
        max_length=40,
        help_text="Blank: UTF-8 (any byte order mark is honoured), else the district's fallback.",
    )

    def clean_sample(self):
        sample = self.cleaned_data["sample"]
        if sample.name.lower().endswith(".zip"):
            raise forms.ValidationError("Choose one CSV file, not a .zip.")
        return sample

    def clean_encoding(self):
        return encoding_name(self.cleaned_data["encoding"])


class TemplateSaveForm(forms.Form):
    file_name = forms.CharField(
        max_length=255,
        strip=False,
        help_text="Exactly as your SIS names the file, extension included; upper and lower "
        "case count.",
    )
    mode = forms.ChoiceField(
        choices=ImportTemplate.Mode.choices,
        initial=ImportTemplate.Mode.SNAPSHOT,
        widget=forms.RadioSelect,
    )
    make_schools = forms.BooleanField(
        required=False,
        label="Make a school of each school code this file names (when no schools file is sent)",
    )

    def clean_file_name(self):
        name = self.cleaned_data["file_name"]
        if name_problems(name):
            raise forms.ValidationError(name_problems(name)[0].capitalize() + ".")
        return name


class LoginAddForm(forms.Form):
    person = forms.CharField(max_length=100, help_text="Whose login, e.g. Ana Ruiz.")
    state = forms.CharField(max_length=20, required=False, help_text="State code, e.g. TX.")


class LoginPermissionsForm(forms.Form):
    permissions = forms.MultipleChoiceField(
        choices=list(PERMISSIONS.items()),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Uploading is always allowed; none ticked = upload only.",
    )


class InviteForm(forms.Form):
    email = forms.EmailField()
    district = forms.ModelChoiceField(
        queryset=District.objects.all(),
        required=False,
        empty_label="None: an operator (sees every district)",
        help_text="The one district a district admin sees.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["district"].label_from_instance = lambda district: district.name


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. nightly export.")
    days = forms.TypedChoiceField(
        label="Valid for",
        coerce=int,
        choices=[(30, "30 days"), (90, "90 days"), (365, "a year"), (0, "until revoked")],
        initial=90,
    )


class TimeZoneForm(forms.Form):
    """A person's own time zone, or blank for the default (`default`: what that is)."""

    time_zone = forms.ChoiceField(label="Show times in", required=False)

    def __init__(self, *args, default: str, **kwargs):
        super().__init__(*args, **kwargs)
        zones = sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})
        self.fields["time_zone"].choices = [("", f"Default: {default}")] + [(z, z) for z in zones]


class PauseForm(forms.ModelForm):
    class Meta:
        model = Pause
        fields = ["starts_on", "ends_on", "reason"]
        widgets = {
            "starts_on": forms.DateInput(attrs={"type": "date"}),
            "ends_on": forms.DateInput(attrs={"type": "date"}),
        }
