from django.apps import AppConfig


class OneRosterConfig(AppConfig):
    name = "rosterdrop.oneroster"
    label = "oneroster"
    verbose_name = "OneRoster 1.2 service"
