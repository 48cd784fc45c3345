"""Renders chat templates as transformers does (jinja2, trim_blocks, lstrip_blocks, loop
controls, its tojson and raise_exception): reads {"template": ..., "cases": [{"messages",
"tools", "kwargs"}]} on stdin, prints one result per case: the text, or "ERROR: ..."."""
import json
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = lambda x, indent=None, sort_keys=False: json.dumps(
    x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)
env.globals["raise_exception"] = raise_exception
req = json.load(sys.stdin)
template = env.from_string(req["template"])
out = []
for case in req["cases"]:
    try:
        ctx = dict(case.get("kwargs") or {})
        ctx.setdefault("add_generation_prompt", True)
        if case.get("tools") is not None:
            ctx["tools"] = case["tools"]
        out.append(template.render(messages=case["messages"], **ctx))
    except Exception as e:  # noqa: BLE001 - any failure is a result to compare
        out.append(f"ERROR: {e}")
print(json.dumps(out))
