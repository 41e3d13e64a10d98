"""Build every recipe under recipes/ with doit. See README.md."""
from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401
