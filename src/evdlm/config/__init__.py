"""Site config: strict pydantic models loaded from YAML, with located errors."""

from evdlm.config.loader import ConfigError, ConfigIssue, LoadedConfig, load_site_config, parse_site_config
from evdlm.config.models import SiteConfig
from evdlm.config.secrets import SecretUnavailable, resolve_secret

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "SecretUnavailable",
    "SiteConfig",
    "load_site_config",
    "parse_site_config",
    "resolve_secret",
]
