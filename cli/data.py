"""`retrainer data generate`, `retrainer validate` and `retrainer labels ingest`: files in, files
or a verdict out. None of them imports Prefect.

The domain modules are imported inside each command (`# noqa: PLC0415`): they pull in pandas,
pyarrow or Great Expectations, which cost seconds, and `retrainer --help` or another command
should not pay for them.
"""
from __future__ import annotations

from retrainer.errors import ConfigError

from .common import print_json


def cmd_data_generate(a) -> int:
    """Write the active model's synthetic data (its spec's `data.generator`) to `--out`: monthly
    admissions for readmission-30d, daily leads for lead-scoring."""
    from retrainer.datagen import generate_for_model  # noqa: PLC0415 - heavy: pandas
    from retrainer.spec import active_model, load_spec  # noqa: PLC0415 - the model chosen by --model

    model = active_model()
    unit = load_spec(model).split.unit.rstrip("s")
    try:
        paths = generate_for_model(model, a.out, periods=a.periods, rows_per_period=a.rows_per_period,
                                   seed=a.seed, start=a.start, drift_from=a.drift_from)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"wrote {len(paths)} files of {model} data (one per {unit}) to {a.out}")
    return 0


def cmd_validate(a) -> int:
    """Run the Great Expectations gate on a file or folder; exit 3 when it fails."""
    from retrainer.dataio import load_batch  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic
    from retrainer.validation import validate_frame  # noqa: PLC0415 - heavy: pandas

    settings = load_settings()
    frame = load_batch(a.data)
    result = validate_frame(frame, settings.validation)
    if a.json:
        print_json(result.summary())
    elif result.success:
        print(f"ok: {a.data}: {result.n_rows} rows passed {result.n_expectations} expectations")
    else:
        print(f"FAILED: {a.data}: {result.n_failed} of {result.n_expectations} expectations failed")
        for line in result.failure_lines():
            print(f"  - {line}")
    return 0 if result.success else 3


def cmd_labels_ingest(a) -> int:
    """Store delayed outcome labels, keys pseudonymised before storage."""
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.deid import pseudonymizer_from_env  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    settings = load_settings()
    n = get_backend(settings).predictions.ingest_labels(a.file, pseudonymizer_from_env(settings.pseudonym_key_env),
                                                        unknown=a.unknown)
    print(f"ingested {n} labels from {a.file} (keys pseudonymised)")
    return 0


def cmd_predictions_compact(a) -> int:
    """Merge the prediction store's small capture files, day by day."""
    from datetime import date, timedelta  # noqa: PLC0415

    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    store = get_backend(load_settings()).predictions
    today = date.today()
    days = [d for d in store.days() if a.days is None or d >= today - timedelta(days=a.days)]
    r = store.compact(days, max_rows=a.max_rows)
    print(f"compacted {r['files_in']} file(s) of {len(r['days'])} day(s) of {store.url} into {r['files_out']} "
          f"({r['rows']} rows); {r['leftovers_deleted']} leftover(s) of an interrupted run deleted")
    return 0


def add_data(sub) -> None:
    """`retrainer data generate`."""
    data = sub.add_parser("data", help="synthetic data").add_subparsers(dest="sub", required=True)
    g = data.add_parser("generate", help="write the model's synthetic data: monthly admissions "
                        "(readmission-30d), daily leads (lead-scoring)")
    g.add_argument("--out", required=True)
    g.add_argument("--periods", "--months", "--days", type=int, default=None, dest="periods",
                   help="how many months (readmission, default 12) or days (lead-scoring, default 28)")
    g.add_argument("--rows-per-period", "--rows-per-month", "--rows-per-day", type=int, default=None,
                   dest="rows_per_period", help="rows per month (default 5000) or per weekday (default 2000)")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--start", default=None, help="first month YYYY-MM (readmission, default 2024-01) or "
                   "first day YYYY-MM-DD (lead-scoring, default 2024-03-04)")
    g.add_argument("--drift-from", type=int, default=None, metavar="PERIOD",
                   help="1-based month or day from which features and the label relationship drift")
    g.set_defaults(func=cmd_data_generate)


def add_validate(sub) -> None:
    """`retrainer validate DATA`."""
    v = sub.add_parser("validate", help="run the Great Expectations gate on a Parquet file or folder")
    v.add_argument("data")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)


def add_labels(sub) -> None:
    """`retrainer labels ingest FILE`."""
    lab = sub.add_parser("labels", help="outcome labels").add_subparsers(dest="sub", required=True)
    li = lab.add_parser("ingest", help="ingest delayed outcome labels (CSV or Parquet with admission_id, "
                        "readmitted_30d, optional patient_id and outcome_at); keys are pseudonymised before storage")
    li.add_argument("file")
    li.add_argument("--unknown", choices=("refuse", "skip", "keep"), default="refuse",
                    help="labels for admissions never scored: refuse the file (default), skip them, or keep them")
    li.set_defaults(func=cmd_labels_ingest)
    pr = sub.add_parser("predictions", help="the prediction store").add_subparsers(dest="sub", required=True)
    pc = pr.add_parser("compact", help="merge each day's small capture files into compact files (readers never see "
                       "a row twice; the compact-predictions deployment runs it hourly)")
    pc.add_argument("--days", type=int, default=None, help="only the last N days (default: every day)")
    pc.add_argument("--max-rows", type=int, default=1_000_000, help="rows per compact file (default 1,000,000)")
    pc.set_defaults(func=cmd_predictions_compact)
