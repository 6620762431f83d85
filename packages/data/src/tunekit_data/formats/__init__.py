"""Per-format check suites: which vectorized checks run for each ``--format``.

Each check is a function ``(view, options) -> Iterator[(record_index, Problem)]`` living in the
module of its rule family (``converse.py`` S rules, ``media.py`` M rules, ``dpo.py`` D rules,
``tools.py`` S14, ``cpt.py`` C1, ``databricks.py`` B rules).
"""

from tunekit_data.formats.arrow_schemas import ARROW_SCHEMAS
from tunekit_data.formats.converse import SFT_CHECKS
from tunekit_data.formats.cpt import CPT_CHECKS
from tunekit_data.formats.databricks import CHAT_CHECKS, PROMPT_RESPONSE_CHECKS
from tunekit_data.formats.dpo import DPO_CHECKS
from tunekit_data.formats.media import MEDIA_CHECKS
from tunekit_data.formats.tools import TOOL_CHECKS
from tunekit_data.formats.view import MEDIA_KINDS, ConverseView, Options

CHECKS = {
    "sft": SFT_CHECKS + MEDIA_CHECKS + TOOL_CHECKS,
    "dpo": SFT_CHECKS + MEDIA_CHECKS + DPO_CHECKS,
    "cpt": CPT_CHECKS,
    "chat": CHAT_CHECKS,
    "prompt-response": PROMPT_RESPONSE_CHECKS,
}

__all__ = ["ARROW_SCHEMAS", "CHECKS", "MEDIA_KINDS", "ConverseView", "Options"]
