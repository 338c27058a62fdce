from django.apps import AppConfig


class CustomConfig(AppConfig):
    name = "rosterdrop.custom"
    verbose_name = "Custom import templates"

    def ready(self) -> None:
        # Here, not at import: the builder reads ImportTemplate, which needs the app registry.
        from rosterdrop.custom.templates import district_format
        from rosterdrop.formats import CUSTOM, register_builder

        register_builder(CUSTOM, district_format)
