"""``ds check``'s rule suites: each checked format's vectorized checks, loaded from the registry's names.

Each check is a function ``(view, options) -> Iterator[(record_index, Problem)]`` living in the
module of its rule family (``converse.py`` S rules, ``media.py`` M rules, ``dpo.py`` D rules,
``tools.py`` S14, ``cpt.py`` C1, ``databricks.py`` B rules); ``registry.py`` says which run for which
``--format``.
"""

from tunekit_data.formats.registry import CHECK_SUITES, load

CHECKS = {name: tuple(check for ref in suite.checks for check in load(ref)) for name, suite in CHECK_SUITES.items()}
