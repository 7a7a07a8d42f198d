"""Audit of configuration: every create, change and delete of providers, models, route aliases, API keys, teams,
memberships, a team's allowed models and route aliases, and workflows becomes an entry in the audit trail
(orchestration/audit.py, hash-chained, checked by `verify_audit`), whether it came from the admin, the API, a
management command or code.

One place: model signals (pre_save reads the row as stored, post_save / post_delete / m2m_changed record the
diff), so no admin form or API view can forget it. Each entry: actor (`user:<name>`, `key:<prefix>`, or
`system` outside a request), action `config.<kind>.created|changed|deleted`, subject (`provider:<name>`, ...)
and data `{"diff": {field: [old, new]}}`, plus `"team": <team id>` when the row is a team's (a team, its
membership, its key, its workflow or a version of it; see `team_of`) so the team's admins can read the entry
(GET /api/audit/). Budgets are fields of keys and teams, so their changes are key and
team changes. Never a secret value: fields named like secrets (key_hash, *secret*, *password*, *token*) show
as "[hidden]", and so does any value that looks like a credential (see `mask`). `api_key_env` holds the NAME
of an environment variable and is recorded as is.

Left out on purpose: `APIKey.spent_usd` (settled spend, not configuration; it moves by queryset updates that
send no signal anyway), `created_at`/`updated_at` (the entry has its own time), and the creation of a workflow
version, which `orchestration/workflows.py` already records as `workflow.version_created`.
"""
from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from orchestration import audit
from orchestration.models import APIKey, LLMModel, Provider, RouteAlias, Team, TeamMembership, Workflow, WorkflowVersion

SYSTEM = "system"
HIDDEN = "[hidden]"
IGNORED_FIELDS = frozenset({"id", "created_at", "updated_at", "spent_usd"})
SECRET_WORD_RE = re.compile(r"(?:^|[_\-])(?:secret|password|passwd|token|key_hash|credentials?|authorization|"
                            r"private_key|api_key|apikey)(?:[_\-]|$)", re.IGNORECASE)
# A value that reads like a credential: a known key prefix, or a long unbroken run of letters and digits.
SECRET_VALUE_RE = re.compile(r"^(?:sk|pk|rk|pdm|ghp|gho|xox[abpr]|AKIA)[-_A-Za-z0-9]{12,}$"
                             r"|^(?=[A-Za-z0-9_\-+/=]*\d)(?=[A-Za-z0-9_\-+/=]*[A-Za-z])[A-Za-z0-9_\-+/=]{32,}$")
URL_PASSWORD_RE = re.compile(r"(://[^/:@\s]+:)[^@/\s]+@")
# A query parameter that carries a credential (`?key=AIza…`, `&api-key=…`, `?access_token=…`) in a URL.
URL_SECRET_PARAM_RE = re.compile(r"([?&;](?:[A-Za-z0-9_\-]*[_\-])?(?:key|api[_\-]?key|secret|token|password|"
                                 r"signature|sig|code|auth)=)[^&;#\s]+", re.IGNORECASE)


def _subject_of_membership(row: TeamMembership) -> str:
    return f"team_membership:{row.team.slug}/{row.user.get_username()}"


def _subject_of_version(row: WorkflowVersion) -> str:
    return f"workflow:{row.workflow.slug}@v{row.number}"


# model -> (kind in the action name, subject of a row)
AUDITED: dict[type[models.Model], tuple[str, Callable[[models.Model], str]]] = {
    Provider: ("provider", lambda row: f"provider:{row.name}"),
    LLMModel: ("model", lambda row: f"model:{row.alias}"),
    RouteAlias: ("route_alias", lambda row: f"route_alias:{row.name}"),
    APIKey: ("api_key", lambda row: f"api_key:{row.prefix}"),
    Team: ("team", lambda row: f"team:{row.slug}"),
    TeamMembership: ("team_membership", _subject_of_membership),
    Workflow: ("workflow", lambda row: f"workflow:{row.slug}"),
    WorkflowVersion: ("workflow_version", _subject_of_version),
}
TEAM_M2M = {Team.allowed_models.through: "allowed_models", Team.allowed_route_aliases.through: "allowed_route_aliases"}


# --- who ------------------------------------------------------------------------------------------------------
_actor: contextvars.ContextVar[str | Callable[[], str] | None] = contextvars.ContextVar("podium_config_actor",
                                                                                      default=None)


def current_actor() -> str:
    """Who is changing configuration now: the request's user or key, else `system`."""
    actor = _actor.get()
    if actor is None:
        return SYSTEM
    return actor() if callable(actor) else actor


@contextmanager
def acting_as(actor: str):
    """Attribute the configuration changes made inside to `actor` (code outside a request, tests)."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def request_actor(request) -> str:
    """`key:<prefix>` for an API key (DRF sets `auth` on the request when the view authenticates), else
    `user:<name>` for a signed-in person, else `anonymous`."""
    prefix = getattr(getattr(request, "auth", None), "prefix", None)
    if prefix:
        return f"key:{prefix}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.get_username()}"
    return "anonymous"


class ConfigActorMiddleware:
    """Makes the request's user or key the actor of configuration changes made while it is handled. The actor
    is read when a change is recorded, after DRF authenticated the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _actor.set(lambda: request_actor(request))
        try:
            return self.get_response(request)
        finally:
            _actor.reset(token)


# --- what -----------------------------------------------------------------------------------------------------
def secret_name(name: str) -> bool:
    """A field or option named like a secret (`key_hash`, `client_secret`, `api_key`); `*_env` names a variable."""
    return not name.lower().endswith("_env") and bool(SECRET_WORD_RE.search(name))


def mask(name: str, value):
    """A value safe to store in the trail: secrets by field name or by look replaced by "[hidden]"."""
    if value is None or value == "":
        return value
    if secret_name(name):
        return HIDDEN
    if isinstance(value, dict):
        return {key: mask(str(key), item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(name, item) for item in value]
    if isinstance(value, str):
        if SECRET_VALUE_RE.match(value):
            return HIDDEN
        return URL_SECRET_PARAM_RE.sub(rf"\1{HIDDEN}", URL_PASSWORD_RE.sub(rf"\1{HIDDEN}@", value))
    return value


def _plain(value):
    """A JSON value that reads back equal (the audit chain hashes what it stores)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _fields(sender) -> list[models.Field]:
    return [field for field in sender._meta.concrete_fields if field.name not in IGNORED_FIELDS]


def _value(field: models.Field, value):
    try:  # "2.50" set on an instance and Decimal("2.5000") read back are the same budget
        return value if field.is_relation else field.to_python(value)
    except Exception:
        return value


def snapshot(row: models.Model, only: set[str] | None = None) -> dict:
    """The audited fields' values (foreign keys by id: `team_id`); `only`: the fields a save wrote."""
    return {field.attname: _value(field, getattr(row, field.attname)) for field in _fields(type(row))
            if only is None or field.name in only or field.attname in only}


def _readable(row: models.Model, attname: str, value):
    """A foreign key as what it points to (`provider: "openai"`) rather than its id."""
    field = next((f for f in _fields(type(row)) if f.attname == attname), None)
    if value is None or field is None or not field.is_relation:
        return value
    related = field.related_model._default_manager.filter(pk=value).first()
    return str(related) if related is not None else value


def diff(row: models.Model, old: dict | None, new: dict | None) -> dict:
    """{field: [old, new]} of the fields that differ, masked and JSON-safe."""
    names = {field.attname: field.name for field in _fields(type(row))}
    changes = {}
    for attname in (new or old or {}):
        before = (old or {}).get(attname)
        after = (new or {}).get(attname)
        if old is not None and new is not None and before == after:
            continue
        if (before if new is None else after) in (None, "", [], {}) and (old is None or new is None):
            continue  # a created or deleted row's empty fields say nothing
        name = names[attname]
        if secret_name(name):
            changes[name] = [HIDDEN if old is not None else None, HIDDEN if new is not None else None]
            continue
        changes[name] = [_plain(mask(name, _readable(row, attname, before))),
                         _plain(mask(name, _readable(row, attname, after)))]
    return changes


def team_of(row: models.Model, old: dict | None = None) -> int | None:
    """The team a configuration row belongs to (its id), else None (an operator's or shared row). A row that
    left its team (a key moved to no team) stays the old team's, so that team's admins see it go."""
    if isinstance(row, Team):
        return row.pk
    if isinstance(row, WorkflowVersion):
        try:
            return row.workflow.team_id
        except Exception:  # its workflow already deleted in a cascade
            return None
    team_id = getattr(row, "team_id", None)
    if team_id is None and old:
        team_id = old.get("team_id")
    return team_id


def _record(sender, row: models.Model, verb: str, changes: dict, old: dict | None = None) -> None:
    kind, subject = AUDITED[sender]
    try:
        name = subject(row)
    except Exception:  # a row deleted in a cascade whose parent is already gone
        name = f"{kind}:{row.pk}"
    data = {"diff": changes}
    team = team_of(row, old)
    if team is not None:
        data["team"] = team  # hashed with the rest of the entry: moving it to another team breaks the chain
    audit.record(actor=current_actor(), action=f"config.{kind}.{verb}", subject=name, data=data)


# --- receivers --------------------------------------------------------------------------------------------------
def before_save(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    if raw:
        return  # loaddata: fixtures are not anybody's change
    if update_fields is not None and set(update_fields) <= IGNORED_FIELDS:
        instance._config_audit_old = None
        return
    only = set(update_fields) if update_fields is not None else None
    stored = None
    if instance.pk is not None and not instance._state.adding:
        stored = sender._default_manager.filter(pk=instance.pk).first()
    instance._config_audit_old = snapshot(stored, only) if stored is not None else None
    instance._config_audit_only = only


def after_save(sender, instance, created, raw=False, update_fields=None, **kwargs) -> None:
    if raw:
        return
    if sender is WorkflowVersion and created:
        return  # recorded by orchestration/workflows.py as workflow.version_created
    old = getattr(instance, "_config_audit_old", None)
    if not created and old is None:
        return  # only ignored fields were saved
    changes = diff(instance, None if created else old,
                   snapshot(instance, None if created else getattr(instance, "_config_audit_only", None)))
    if created or changes:
        _record(sender, instance, "created" if created else "changed", changes, old)


def after_delete(sender, instance, **kwargs) -> None:
    _record(sender, instance, "deleted", diff(instance, snapshot(instance), None))


def _names(queryset) -> list[str]:
    return sorted(str(row) for row in queryset)


def team_targets_changed(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    """A team's allowed models or route aliases: {field: [names before, names after]} on the team."""
    field = TEAM_M2M[sender]
    if not reverse:  # team.allowed_models.add(...)
        if action.startswith("pre_"):
            instance._config_audit_m2m = {**getattr(instance, "_config_audit_m2m", {}),
                                          field: _names(getattr(instance, field).all())}
            return
        before = getattr(instance, "_config_audit_m2m", {}).get(field)
        after = _names(getattr(instance, field).all())
        if before is not None and before != after:
            _record(Team, instance, "changed", {field: [before, after]})
        return
    # model.team_set.add(team, ...): record on each team concerned
    if action == "pre_clear":
        instance._config_audit_teams = list(instance.teams.all())  # related_name="teams" on both fields
        return
    if action.startswith("pre_"):
        return
    teams = list(Team.objects.filter(pk__in=pk_set)) if pk_set else getattr(instance, "_config_audit_teams", [])
    name = str(instance)
    for team in teams:
        after = _names(getattr(team, field).all())
        before = sorted(set(after) - {name}) if action == "post_add" else sorted(set(after) | {name})
        if before != after:
            _record(Team, team, "changed", {field: [before, after]})


def connect() -> None:
    """Called once from OrchestrationConfig.ready()."""
    for sender in AUDITED:
        uid = f"config-audit-{sender.__name__}"
        pre_save.connect(before_save, sender=sender, dispatch_uid=uid)
        post_save.connect(after_save, sender=sender, dispatch_uid=uid)
        post_delete.connect(after_delete, sender=sender, dispatch_uid=uid)
    for through in TEAM_M2M:
        m2m_changed.connect(team_targets_changed, sender=through, dispatch_uid=f"config-audit-{through.__name__}")
