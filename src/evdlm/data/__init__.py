"""Data shipped with evdlm: the embedded demo site."""

from pathlib import Path

DEMO_SITE_PATH = Path(__file__).resolve().parent / "demo_site.yaml"
