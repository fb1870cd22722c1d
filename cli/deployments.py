"""`retrainer deployments render [--out prefect.yaml] [--check]` (no Prefect import)."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_render(a) -> int:
    from retrainer.deployments import AWS_FILE, check, render, render_aws  # noqa: PLC0415 - light, but only here
    from retrainer.spec import REPO_ROOT, available_models, load_spec  # noqa: PLC0415

    specs = [load_spec(name) for name in available_models()]
    text = render(specs)
    out = Path(a.out) if a.out else REPO_ROOT / "prefect.yaml"
    aws_out = Path(a.aws_out) if a.aws_out else (AWS_FILE if not a.out else out.with_name(f"{out.stem}-aws.yaml"))
    files = [(out, text), (aws_out, render_aws(text))]
    if a.check:
        problems = [p for p in (check(path, t) for path, t in files) if p]
        if problems:
            print(f"error: {problems[0]}", file=sys.stderr)
            return 1
        print(f"ok: {out} and {aws_out} are up to date ({len(specs)} models)")
        return 0
    for path, t in files:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(t)
        tmp.replace(path)  # atomic: never a half-written deployment file
    print(f"wrote {out} and {aws_out}: deployments of {', '.join(s.name for s in specs)}")
    return 0


def add_deployments(sub) -> None:
    d = sub.add_parser("deployments", help="prefect.yaml from the model specs").add_subparsers(dest="sub",
                                                                                               required=True)
    r = d.add_parser("render", help="write prefect.yaml: one deployment set per spec in models/")
    r.add_argument("--out", default=None, help="default: prefect.yaml in the repo")
    r.add_argument("--aws-out", default=None, help="the AWS twins (default: deployments/prefect-aws.yaml)")
    r.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    r.set_defaults(func=cmd_render)
