from django.apps import AppConfig


class CustomConfig(AppConfig):
    name = "rosterdrop.custom"
    verbose_name = "Custom import templates"
