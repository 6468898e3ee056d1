from django.apps import AppConfig


class CashbackConfig(AppConfig):
    name = "cashback"
    default_auto_field = "django.db.models.BigAutoField"
