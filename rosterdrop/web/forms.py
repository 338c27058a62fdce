from django import forms

from rosterdrop.districts.models import District
from rosterdrop.notify.models import Subscription


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
    class Meta:
        model = District
        fields = [
            "name",
            "paused",
            "quiet_period_seconds",
            "removal_threshold",
            "fallback_encoding",
        ]
        labels = {
            "quiet_period_seconds": "Quiet period (seconds)",
            "removal_threshold": "Removal threshold (0-1, blank = default)",
        }

    def clean_removal_threshold(self):
        value = self.cleaned_data["removal_threshold"]
        if value is not None and not 0 <= value <= 1:
            raise forms.ValidationError("Give a share between 0 and 1, e.g. 0.1 for 10 %.")
        return value

    def clean_fallback_encoding(self):
        import codecs

        value = self.cleaned_data["fallback_encoding"].strip()
        try:
            value and codecs.lookup(value)
        except LookupError:
            raise forms.ValidationError(f"{value} is not an encoding Python knows.") from None
        return value


class SubscriptionForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["email", "on_success"]
        labels = {"on_success": "Also when a sync succeeds"}


class AllowListForm(forms.Form):
    login = forms.CharField(widget=forms.HiddenInput)
    allowed_ips = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="IPs or CIDR networks; blank = any address.",
    )
