from django.apps import AppConfig

from rosterdrop.formats.spec import FormatSpec


class CustomConfig(AppConfig):
    name = "rosterdrop.custom"
    verbose_name = "Custom import templates"

    def ready(self) -> None:
        from rosterdrop.formats import CUSTOM, register_builder

        register_builder(CUSTOM, _district_format)


def _district_format(slug: str) -> FormatSpec:
    # Imported when a custom format is first asked for, not at start: the builder reads
    # ImportTemplate (the app registry) and imports the pipeline's reader.
    from rosterdrop.custom.templates import district_format

    return district_format(slug)
