"""The `reviewers` group: people in it may claim and decide review items."""
from django.db import migrations

GROUP = "reviewers"
CODENAME = "decide_reviewitem"


def create_reviewers_group(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    # Permissions are normally created after all migrations (post_migrate); create this one now so the
    # group can hold it. post_migrate later finds it and leaves it alone.
    content_type, _ = ContentType.objects.get_or_create(app_label="orchestration", model="reviewitem")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=CODENAME, defaults={"name": "Can claim and decide review items"})
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(permission)


def remove_reviewers_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0002_reviews_step_key_default_action"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_reviewers_group, remove_reviewers_group)]
