from django.apps import AppConfig


class DistrictsConfig(AppConfig):
    name = "rosterdrop.districts"
