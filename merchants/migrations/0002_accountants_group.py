"""Create the group `Accountants`: view merchants, deposits and purchases; export payouts."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Accountants"
# (app_label, codename). Deliberately no API keys and nothing that adds, changes or deletes.
PERMISSIONS = [
    ("merchants", "view_merchant"),
    ("merchants", "view_balance"),
    ("merchants", "view_ledgerentry"),
    ("cashback", "view_purchase"),
    ("cashback", "view_attempt"),
    ("cashback", "view_webhookdelivery"),
    ("cashback", "export_payouts"),
]


def create_group(apps, schema_editor):
    # Permissions are normally created after all migrations ran (post_migrate); create them
    # now so a fresh database can be given them in this same migrate run.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("merchants", "0001_initial"),
        ("cashback", "0002_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
