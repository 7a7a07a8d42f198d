"""Podium's database models, one module per area; import them from here."""
from orchestration.models.registry import Provider, LLMModel, RouteAlias  # noqa: F401
from orchestration.models.keys import APIKey  # noqa: F401
from orchestration.models.workflows import Workflow, WorkflowVersion  # noqa: F401
from orchestration.models.runs import Run, Step  # noqa: F401
from orchestration.models.reviews import ReviewItem  # noqa: F401
from orchestration.models.audit import AuditEvent  # noqa: F401
from orchestration.models.stats import ModelStat  # noqa: F401
from orchestration.models.dead_letters import WriterDeadLetter  # noqa: F401
from orchestration.models.calibration import Calibrator, ConfidenceLabel  # noqa: F401
from orchestration.models.idempotency import IdempotencyKey  # noqa: F401
from orchestration.models.teams import Team, TeamMembership  # noqa: F401
from orchestration.models.budgets import BudgetReservation  # noqa: F401
