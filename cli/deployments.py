"""`retrainer deployments render [--out prefect.yaml] [--check]` (no Prefect import)."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_render(a) -> int:
    from retrainer.deployments import check, render  # noqa: PLC0415 - light, but only here
    from retrainer.spec import REPO_ROOT, available_models, load_spec  # noqa: PLC0415

    specs = [load_spec(name) for name in available_models()]
    text = render(specs)
    out = Path(a.out) if a.out else REPO_ROOT / "prefect.yaml"
    if a.check:
        problem = check(out, text)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        print(f"ok: {out} is up to date ({len(specs)} models)")
        return 0
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)  # atomic: never a half-written prefect.yaml
    print(f"wrote {out}: deployments of {', '.join(s.name for s in specs)}")
    return 0


def add_deployments(sub) -> None:
    d = sub.add_parser("deployments", help="prefect.yaml from the model specs").add_subparsers(dest="sub",
                                                                                               required=True)
    r = d.add_parser("render", help="write prefect.yaml: one deployment set per spec in models/")
    r.add_argument("--out", default=None, help="default: prefect.yaml in the repo")
    r.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    r.set_defaults(func=cmd_render)
