import pytest

from retrainer.versioning import Fingerprint, next_version

P = Fingerprint("schema1", "data1", "params1")


def test_first_model_is_1_0_0():
    d = next_version([], None, None, P)
    assert (d.version, d.bump) == ("1.0.0", "first")


@pytest.mark.parametrize("new,expected,bump", [
    (Fingerprint("schema2", "data1", "params1"), "2.0.0", "major"),
    (Fingerprint("schema1", "data2", "params1"), "1.3.0", "minor"),
    (Fingerprint("schema1", "data1", "params2"), "1.2.1", "patch"),
    (Fingerprint("schema1", "data1", "params1"), "1.2.1", "patch"),
])
def test_policy(new, expected, bump):
    d = next_version(["1.0.0", "1.1.0", "1.2.0"], "1.2.0", P, new)
    assert (d.version, d.bump) == (expected, bump)


def test_bump_skips_taken_versions_on_the_parent_line():
    # production 1.1.0; a rejected 1.2.0 and a 1.1.1 patch exist: new data -> 1.3.0, settings -> 1.1.2
    taken = ["1.0.0", "1.1.0", "1.1.1", "1.2.0"]
    assert next_version(taken, "1.1.0", P, Fingerprint("schema1", "data9", "params1")).version == "1.3.0"
    assert next_version(taken, "1.1.0", P, Fingerprint("schema1", "data1", "params9")).version == "1.1.2"
    assert next_version(taken + ["2.0.0"], "1.1.0", P, Fingerprint("x", "d", "p")).version == "3.0.0"


def test_bad_version_string():
    with pytest.raises(ValueError, match="MAJOR.MINOR.PATCH"):
        next_version(["1.0"], "1.0", P, P)
