from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "rosterdrop.intake"
