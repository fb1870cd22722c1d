"""`retrainer models list|check|suite`: the model specs in models/ (no Prefect import)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import print_json


def cmd_models_list(a) -> int:
    from retrainer.spec import available_models, load_spec  # noqa: PLC0415 - light, but only here

    rows = []
    for name in available_models():
        s = load_spec(name)
        rows.append({"model": name, "task": s.task, "primary_metric": s.metrics.primary, "features": len(s.features),
                     "entry_point": s.training.entry_point, "schedule": s.schedule.cron})
    if a.json:
        print_json(rows)
        return 0
    print(f"{'MODEL':<20} {'TASK':<22} {'METRIC':<9} {'FEATURES':>8}  SCHEDULE     ENTRY POINT")
    for r in rows:
        print(f"{r['model']:<20} {r['task']:<22} {r['primary_metric']:<9} {r['features']:>8}  "
              f"{(r['schedule'] or '-'):<12} {r['entry_point']}")
    return 0


def cmd_models_check(a) -> int:
    """Validate a spec (a name in models/ or a YAML file) and resolve its entry points."""
    from retrainer.spec import contract, load_spec, resolve_entry_point  # noqa: PLC0415

    s = load_spec(a.spec)
    resolve_entry_point(s.training.entry_point, "training entry point")
    if s.data.generator:
        resolve_entry_point(s.data.generator, "data generator")
    from retrainer.spec.contract import Contract  # noqa: PLC0415

    c = Contract(s) if Path(str(a.spec)).suffix in (".yaml", ".yml") else contract(s.name)
    print(f"ok: {s.name}: {s.task}, {len(c.FEATURES)} features ({len(c.MONITORED_FEATURES)} monitored), "
          f"label {c.LABEL}, primary metric {s.metrics.primary}, split {s.split.unit} "
          f"{s.split.train or 'all'}/{s.split.validation}/{s.split.test}, entry point {s.training.entry_point}")
    return 0


def cmd_models_suite(a) -> int:
    """The Great Expectations suite generated from the spec (with its extra expectations)."""
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic
    from retrainer.spec import load_spec, using  # noqa: PLC0415
    from retrainer.spec.suite import extra_path, generate_suite, load_extras  # noqa: PLC0415

    s = load_spec(a.spec)
    with using(s.name):
        config = generate_suite(s)
        config["expectations"] += load_extras(extra_path(load_settings().validation.expectations_dir, s.name))
    text = json.dumps(config, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
        print(f"wrote {len(config['expectations'])} expectations to {a.out}")
    else:
        print(text)
    return 0


def add_models(sub) -> None:
    """`retrainer models ...`."""
    m = sub.add_parser("models", help="the model specs (models/<name>.yaml)").add_subparsers(dest="sub", required=True)
    ls = m.add_parser("list", help="every spec: task, primary metric, features, schedule, entry point")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_models_list)
    ck = m.add_parser("check", help="validate a spec and import its entry points; one error line otherwise")
    ck.add_argument("spec", help="a model name in models/ or a YAML file")
    ck.set_defaults(func=cmd_models_check)
    su = m.add_parser("suite", help="the Great Expectations suite generated from the spec")
    su.add_argument("spec")
    su.add_argument("--out", default=None)
    su.set_defaults(func=cmd_models_suite)
