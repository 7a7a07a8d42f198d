"""One adapter per wire protocol, all behind `ProviderAdapter`. No Django imports here."""
from orchestration.providers.base import ProviderAdapter, adapter_for  # noqa: F401
