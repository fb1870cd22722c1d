"""Version policy: which semantic version a newly trained model gets.

Compared with its parent (the production version it would replace, or the newest version when
nothing is in production):

- MAJOR when the model's input feature schema changes (names or types of features);
- MINOR when it was retrained on new data with the same schema;
- PATCH when only non-data settings changed (hyperparameters, code) on the same data.

The first model is 1.0.0. A bump starts from the highest version already taken on the parent's
line, so versions never collide (a rejected 1.1.0 makes the next data retrain 1.2.0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import semver

FIRST = semver.Version(1, 0, 0)


@dataclass(frozen=True)
class Fingerprint:
    schema_hash: str
    data_hash: str
    params_hash: str


@dataclass(frozen=True)
class VersionDecision:
    version: str
    bump: str  # "first" | "major" | "minor" | "patch"
    reason: str


def parse(version: str) -> semver.Version:
    try:
        return semver.Version.parse(version)
    except (ValueError, TypeError):
        raise ValueError(f"{version!r} is not a MAJOR.MINOR.PATCH version") from None


def next_version(existing: Iterable[str], parent_version: str | None,
                 parent: Fingerprint | None, new: Fingerprint) -> VersionDecision:
    taken = sorted(parse(v) for v in existing)
    if not taken or parent is None or parent_version is None:
        if taken:  # versions exist but no parent to compare with: start a new line
            top = taken[-1].bump_major()
            return VersionDecision(str(top), "major", "no parent version to compare with")
        return VersionDecision(str(FIRST), "first", "first model")
    base = parse(parent_version)
    if new.schema_hash != parent.schema_hash:
        top = max(taken)
        return VersionDecision(str(top.bump_major()), "major",
                               "input feature schema changed")
    if new.data_hash != parent.data_hash:
        line = max(v for v in taken if v.major == base.major)
        return VersionDecision(str(line.bump_minor()), "minor",
                               "retrained on new data with the same schema")
    line = max(v for v in taken if (v.major, v.minor) == (base.major, base.minor))
    reason = ("same data and schema, settings or code changed"
              if new.params_hash != parent.params_hash else "same data, schema and settings (re-run)")
    return VersionDecision(str(line.bump_patch()), "patch", reason)
