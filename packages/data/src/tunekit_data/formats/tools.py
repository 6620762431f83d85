"""Nova 2 tool calling (rule S14; data-formats.md section 2, N2 *Tool calling*).

Tool definitions and tool inputs are arbitrary JSON, which no fixed Arrow schema can type, so the
block reader carries them as JSON text (see ``schema.OPAQUE``) and these checks decode them per
record. Only records that use tools pay for it; the Nova 1 gate lives in ``converse.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import orjson

from tunekit_data.check import Hit, Problem, present, strings
from tunekit_data.formats.view import ConverseView, Options


def _s14(field: str, message: str) -> Problem:
    return Problem.make("S14", field, message)


def _tool_names(config: object) -> tuple[set[str], list[Problem]]:
    problems: list[Problem] = []
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list) or not tools:
        return set(), [_s14("toolConfig.tools", "toolConfig.tools must be a non-empty array")]
    names: set[str] = set()
    for i, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        path = f"toolConfig.tools[{i}].toolSpec"
        if not isinstance(spec, dict):
            problems.append(_s14(path, "each tool needs a toolSpec object"))
            continue
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            problems.append(_s14(f"{path}.name", "tool name is required"))
        elif name in names:
            problems.append(_s14(f"{path}.name", f"duplicate tool name {name!r}"))
        else:
            names.add(name)
        desc = spec.get("description")
        if not isinstance(desc, str) or not desc.strip():
            problems.append(_s14(f"{path}.description", "tool description must be a non-empty string"))
        schema = spec.get("inputSchema", {}).get("json") if isinstance(spec.get("inputSchema"), dict) else None
        if not isinstance(schema, dict) or "type" not in schema:
            problems.append(_s14(f"{path}.inputSchema.json", "inputSchema.json must be a JSON schema object with 'type'"))
    return names, problems


def check_tools(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S14 on records that define or use tools (Nova 2 Lite)."""
    if not o.profile.nova2:
        return
    b = v.blocks
    uses = v.member("toolUse")
    results = v.member("toolResult")
    config = v.column("toolConfig")
    has_config = present(config)
    rows = set(np.flatnonzero(has_config)) | set(b.row[uses | results])
    if not rows:
        return
    by_row: dict[int, list[int]] = defaultdict(list)
    for j in np.flatnonzero(uses | results):
        by_row[int(b.row[j])].append(int(j))
    roles = v.block_role
    for row in sorted(int(r) for r in rows):
        names: set[str] = set()
        if has_config[row]:
            names, problems = _tool_names(orjson.loads(strings(config, row)))
            yield from ((row, p) for p in problems)
        elif by_row[row]:
            yield row, _s14("toolConfig", "records with toolUse / toolResult need a toolConfig")
        yield from ((row, p) for p in _conversation(b, roles, uses, by_row[row], names, has_config=bool(has_config[row])))


def _conversation(b, roles, uses: np.ndarray, blocks: list[int], names: set[str], *, has_config: bool) -> Iterator[Problem]:
    seen_uses: dict[str, int] = {}
    answered: set[str] = set()
    use_json, result_json = b.field("toolUse"), b.field("toolResult")
    for j in blocks:
        role = strings(roles, j)
        if uses[j]:
            path = b.path(j, "toolUse")
            use = orjson.loads(strings(use_json, j))
            if role != "assistant":
                yield _s14(path, "toolUse only in assistant turns")
            uid = use.get("toolUseId") if isinstance(use, dict) else None
            name = use.get("name") if isinstance(use, dict) else None
            if not isinstance(uid, str) or not uid:
                yield _s14(f"{path}.toolUseId", "toolUseId is required")
            elif uid in seen_uses:
                yield _s14(f"{path}.toolUseId", f"duplicate toolUseId {uid!r}")
            else:
                seen_uses[uid] = j
            if has_config and (not isinstance(name, str) or name not in names):
                yield _s14(f"{path}.name", f"tool {name!r} is not defined in toolConfig")
        else:
            path = b.path(j, "toolResult")
            result = orjson.loads(strings(result_json, j))
            if role != "user":
                yield _s14(path, "toolResult only in user turns")
            uid = result.get("toolUseId") if isinstance(result, dict) else None
            if not isinstance(uid, str) or uid not in seen_uses:
                yield _s14(f"{path}.toolUseId", f"toolResult refers to {uid!r}, which no earlier toolUse has")
            elif uid in answered:
                yield _s14(f"{path}.toolUseId", f"toolUseId {uid!r} is answered more than once")
            else:
                answered.add(uid)
            content = result.get("content") if isinstance(result, dict) else None
            items = content if isinstance(content, list) else []
            for k, item in enumerate(items):
                if not isinstance(item, dict) or len([key for key in ("text", "json") if key in item]) != 1:
                    yield _s14(f"{path}.content[{k}]", "toolResult content items hold exactly one of text or json")


TOOL_CHECKS = (check_tools,)
