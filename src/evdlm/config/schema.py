"""The JSON schema of site configs, generated from the models (site_configs/schema.json)."""

from __future__ import annotations

from typing import Any

from evdlm.config.loader import EXTENSION_PREFIX
from evdlm.config.models import SiteConfig


def site_config_schema() -> dict[str, Any]:
    schema = SiteConfig.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "evdlm site config"
    # Mirrors the loader: top-level `x-*` keys hold YAML anchors and are not validated.
    schema["patternProperties"] = {f"^{EXTENSION_PREFIX}": {}}
    return schema
