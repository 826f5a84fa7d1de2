#!/usr/bin/env python3
"""Generate cohort's shared conformance vectors (bucketing.json, decisions.json).

This file is an INDEPENDENT reference implementation of cohort's release
evaluation algorithm ("xxh3-slots-v1"), written in Python from the normative
description (see README.md in this directory) and deliberately not derived from
the Rust code in sdk/src. The Rust implementation must reproduce every vector
bit for bit.

The reference is intentionally *strict*: whenever a hand-written case strays
into territory the specification leaves undefined (an `eq` with two values, a
semver condition whose value is not a valid version, a release with a single
version, an allocation larger than its slot, a unit of 42.0, ...) it raises
instead of guessing, so that the vectors only pin down specified behaviour.
Every hand-written decision case also states the outcome its author intended;
the generator asserts that the reference agrees before writing anything.

Usage (from the repository root):

    python3 -m venv /tmp/vecenv && /tmp/vecenv/bin/pip install xxhash
    /tmp/vecenv/bin/python sdk/testdata/generate.py

Output is deterministic (fixed random seed, no clock, no environment input).
Requires only the `xxhash` package (`xxhash.xxh3_64_intdigest` = seedless
XXH3 64-bit).
"""

import json
import os
import random
import re

import xxhash

ALGORITHM = "xxh3-slots-v1"
BUCKETS = 100_000
HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# Reference implementation
# ---------------------------------------------------------------------------


def hash64(salt: str, unit: str) -> int:
    """XXH3-64 (seed 0) of utf8(salt) + b":" + utf8(unit)."""
    return xxhash.xxh3_64_intdigest(salt.encode("utf-8") + b":" + unit.encode("utf-8"))


def bucket_of(salt: str, unit: str) -> int:
    return hash64(salt, unit) % BUCKETS


def is_bool(v) -> bool:
    return isinstance(v, bool)


def is_number(v) -> bool:
    # Python's bool is an int subclass; JSON booleans are NOT numbers.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


I64_MIN, U64_MAX = -(2**63), 2**64 - 1


def unit_text(value):
    """Text form of a unit value, or None when the unit counts as missing."""
    if isinstance(value, str):
        return value  # "" is present
    if is_bool(value):
        return "true" if value else "false"
    if isinstance(value, int):
        if I64_MIN <= value <= U64_MAX:
            return str(value)
        return None  # does not fit i64/u64: a JSON parser reads it as a float
    if isinstance(value, float):
        if value.is_integer():
            # 42.0 -- the spec says non-integral numbers are missing, but a JSON
            # "42.0" vs "42" distinction is parser dependent: keep out of vectors.
            raise ValueError(f"ambiguous unit value {value!r}")
        return None
    return None  # null, arrays, objects


_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)


def as_number(v):
    """Numeric view of an attribute for lt/lte/gt/gte, or None."""
    if is_number(v):
        return v
    if isinstance(v, str):
        if _DECIMAL.fullmatch(v):
            return float(v) if "." in v else int(v)
        # Strings such as "+3", "3.", ".5", "1e3", " 3", "inf", "NaN" are
        # outside the vectors: "parses fully as a decimal number" does not
        # settle them unambiguously.
        looks_numeric = r"\s*[+-]?(inf(inity)?|nan|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)\s*"
        if re.fullmatch(looks_numeric, v, re.I | re.ASCII):
            raise ValueError(f"ambiguous numeric string {v!r}")
    return None


_SEMVER = re.compile(
    r"[vV]?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)
_NUMERIC_ID = re.compile(r"[0-9]+", re.ASCII)


def parse_version(s):
    """(major, minor, patch, prerelease list) or None if invalid."""
    if not isinstance(s, str):
        return None
    m = _SEMVER.fullmatch(s)
    if not m:
        return None
    nums = [int(g) if g is not None else 0 for g in m.group(1, 2, 3)]
    if any(n >= 2**64 for n in nums):
        raise ValueError(f"version part overflows u64: {s!r}")
    pre = m.group(4).split(".") if m.group(4) else []
    for ident in pre:
        if _NUMERIC_ID.fullmatch(ident) and len(ident) > 1 and ident[0] == "0":
            raise ValueError(f"numeric pre-release id with leading zero: {s!r}")
    return (nums[0], nums[1], nums[2], pre)


def compare_versions(a, b) -> int:
    """SemVer 2.0 precedence: -1, 0 or 1."""
    for x, y in zip(a[:3], b[:3]):
        if x != y:
            return -1 if x < y else 1
    pa, pb = a[3], b[3]
    if not pa or not pb:
        if not pa and not pb:
            return 0
        return 1 if not pa else -1  # the one WITH a pre-release is lower
    for x, y in zip(pa, pb):
        xn, yn = bool(_NUMERIC_ID.fullmatch(x)), bool(_NUMERIC_ID.fullmatch(y))
        if xn and yn:
            if int(x) != int(y):
                return -1 if int(x) < int(y) else 1
        elif xn != yn:
            return -1 if xn else 1  # numeric < alphanumeric
        elif x != y:
            return -1 if x.encode() < y.encode() else 1  # ASCII byte order
    if len(pa) != len(pb):
        return -1 if len(pa) < len(pb) else 1
    return 0


def json_equal(a, b) -> bool:
    """Type-strict equality of an attribute and a condition value."""
    if is_bool(a) or is_bool(b):
        return is_bool(a) and is_bool(b) and a == b
    if is_number(a) and is_number(b):
        return a == b  # 3 == 3.0
    if isinstance(a, str) and isinstance(b, str):
        return a == b  # same code points == same UTF-8 bytes
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        raise ValueError("arrays/objects in equality are outside the vectors")
    return False


NUMERIC_OPS = {"lt": lambda c: c < 0, "lte": lambda c: c <= 0, "gt": lambda c: c > 0, "gte": lambda c: c >= 0}
SEMVER_OPS = {
    "semver_eq": lambda c: c == 0,
    "semver_lt": lambda c: c < 0,
    "semver_lte": lambda c: c <= 0,
    "semver_gt": lambda c: c > 0,
    "semver_gte": lambda c: c >= 0,
}


def condition_holds(cond, ctx) -> bool:
    op, values = cond["op"], cond["values"]
    attr = ctx.get(cond["attr"])
    if attr is None:  # absent or null: false for every op, negated ones too
        return False
    if op == "in":
        return any(json_equal(attr, v) for v in values)
    if op == "not_in":
        return not any(json_equal(attr, v) for v in values)
    if op in ("eq", "neq"):
        if len(values) != 1:
            raise ValueError(f"{op} needs exactly one value")
        return json_equal(attr, values[0]) == (op == "eq")
    if op in ("starts_with", "ends_with", "contains"):
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"{op} values must be strings")
        if not isinstance(attr, str):
            return False
        test = {"starts_with": str.startswith, "ends_with": str.endswith, "contains": lambda s, v: v in s}[op]
        return any(test(attr, v) for v in values)
    if op in NUMERIC_OPS:
        if len(values) != 1 or not is_number(values[0]):
            raise ValueError(f"{op} needs exactly one numeric value")
        a = as_number(attr)
        if a is None:
            return False
        b = values[0]
        return NUMERIC_OPS[op]((a > b) - (a < b))
    if op in SEMVER_OPS:
        if len(values) != 1 or parse_version(values[0]) is None:
            raise ValueError(f"{op} needs exactly one valid version value")
        a = parse_version(attr)
        if a is None:
            return False
        return SEMVER_OPS[op](compare_versions(a, parse_version(values[0])))
    raise ValueError(f"unknown op {op!r}")


def all_hold(conds, ctx) -> bool:
    # Evaluate every condition (not short-circuiting) so that the strictness
    # checks in condition_holds see every condition of every case.
    results = [condition_holds(c, ctx) for c in conds]
    return all(results)


def validate_release(r):
    versions = r["versions"]
    if len(versions) < 2 or len(set(versions)) != len(versions):
        raise ValueError(f"{r['key']}: need >= 2 distinct versions")
    slot = BUCKETS // (len(versions) - 1)
    for v, n in r.get("allocation", {}).items():
        if v not in versions[1:] or not isinstance(n, int) or is_bool(n) or not 0 <= n <= slot:
            raise ValueError(f"{r['key']}: bad allocation {v}={n}")
    for v in r.get("overrides", {}).values():
        if v not in versions:
            raise ValueError(f"{r['key']}: override to unknown version {v}")
    for rule in r.get("rules", []):
        if rule["serve"] not in versions:
            raise ValueError(f"{r['key']}: rule serves unknown version")
    if r.get("bucketing", ALGORITHM) != ALGORITHM:
        raise ValueError("unknown bucketing algorithm")


def result(version, reason, bucket=None, error_code=None):
    return {"version": version, "reason": reason, "bucket": bucket, "error_code": error_code}


def evaluate(releases, kill_all, key, ctx):
    """The normative algorithm; the first step that applies wins."""
    for r in releases:
        validate_release(r)
    matches = [r for r in releases if r["key"] == key]
    if len(set(r["key"] for r in releases)) != len(releases):
        raise ValueError("duplicate release keys")
    # 1. unknown key
    if not matches:
        return result(None, "ERROR", error_code="FLAG_NOT_FOUND")
    r = matches[0]
    versions = r["versions"]
    baseline = versions[0]
    # 2. kill switches
    if kill_all or r.get("killed", False):
        return result(baseline, "DISABLED")
    unit = unit_text(ctx.get(r.get("unit", "targetingKey")))
    # 3. overrides
    overrides = r.get("overrides", {})
    if unit is not None and unit in overrides:
        return result(overrides[unit], "TARGETING_MATCH")
    # 4. rules, in order (they do not need the unit)
    for rule in r.get("rules", []):
        if all_hold(rule["when"], ctx):
            return result(rule["serve"], "TARGETING_MATCH")
    # 5. audience
    audience = r.get("audience", [])
    if audience and not all_hold(audience, ctx):
        return result(baseline, "DEFAULT")
    # 6. unit needed from here on
    if unit is None:
        return result(baseline, "ERROR", error_code="TARGETING_KEY_MISSING")
    # 7. split
    b = bucket_of(r.get("salt", r["key"]), unit)
    slot = BUCKETS // (len(versions) - 1)
    allocation = r.get("allocation", {})
    for i, candidate in enumerate(versions[1:]):
        if i * slot <= b < i * slot + allocation.get(candidate, 0):
            return result(candidate, "SPLIT", bucket=b)
    return result(baseline, "SPLIT", bucket=b)


# ---------------------------------------------------------------------------
# Self-checks of the reference itself
# ---------------------------------------------------------------------------


def self_check():
    assert hash64("", "") == xxhash.xxh3_64_intdigest(b":")
    assert xxhash.xxh3_64_intdigest(b"") == 0x2D06800538D394C2  # published XXH3 test value
    chain = ["1.2.3-alpha.1", "1.2.3-alpha.beta", "1.2.3-beta", "1.2.3-beta.2",
             "1.2.3-beta.11", "1.2.3-rc.1", "1.2.3"]
    parsed = [parse_version(v) for v in chain]
    for i in range(len(chain)):
        for j in range(len(chain)):
            want = (i > j) - (i < j)
            assert compare_versions(parsed[i], parsed[j]) == want, (chain[i], chain[j])
    for good in ["1", "1.2", "1.2.3", "v1.2.3", "V1", "01.002.3", "1.2.3-rc.1+build.5", "1.2-beta", "0.0.0"]:
        assert parse_version(good) is not None, good
    for bad in ["", "v", "1.2.3.4", "abc", "1..2", "1.2.", ".1", "1.2.3-", "1.2.3-a..b",
                "1.2.3 ", " 1.2.3", "vv1", "1.2.3-beta_1", "１.2.3", "1.2.3\n"]:
        assert parse_version(bad) is None, bad
    assert compare_versions(parse_version("1.2"), parse_version("1.2.0")) == 0
    assert compare_versions(parse_version("2"), parse_version("v2.0.0")) == 0
    assert compare_versions(parse_version("01.2.3"), parse_version("1.2.3")) == 0
    assert compare_versions(parse_version("1.2.3+a"), parse_version("1.2.3+b")) == 0


# ---------------------------------------------------------------------------
# bucketing.json
# ---------------------------------------------------------------------------


def rand_text(rng, n, alphabet):
    return "".join(rng.choice(alphabet) for _ in range(n))


def rand_unicode(rng, n):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x20000, 0x2A6DF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def rand_uuid(rng):
    h = "%032x" % rng.getrandbits(128)
    h = h[:12] + "4" + h[13:16] + "89ab"[rng.randrange(4)] + h[17:]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def bucketing_cases():
    rng = random.Random(20240917)
    ascii_alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."

    salts = [
        "checkout", "search-v2", "", "a", "new-pricing-page", "release:with:colons",
        "Checkout",  # case matters
        "café", "e\u0301-combining", "日本語リリース", "🚀launch", "مرحبا-release",
        " spaced salt ", "salt\twith\ttab",
        "long-salt-" + "x" * 290,
    ]
    units = [
        "", "user-0", "user-1", "user-17", "user-42", "user-9999", "User-17",
        "alice@example.com", "bob.smith+canary@mail.example.org", "ÉLODIE@exemple.fr",
        "0", "1", "42", "-7", "007", "3.14", "1e3", "18446744073709551615", "9223372036854775807",
        "-9223372036854775808", "true", "false", "null",
        "é", "e\u0301", "日本語", "🚀", "👩\u200d💻", "🇳🇿", "שלום", "مرحبا بالعالم",
        "abc\u202edef", "Ω≈ç√∫", "Zalgo: z\u0336\u0351a\u0337l\u0338g\u0335o",
        ":", "::", "a:b", ":leading", "trailing:", "tenant:42:user:17",
        " ", "\t", "\n", "\u0000", "line1\r\nline2", "quote\"back\\slash",
        "node-eu-west-1a-7f3c", "tenant_acme",
    ]
    units += [rand_uuid(rng) for _ in range(6)]
    units += ["u" * 200, "日本" * 40, "🚀" * 60, rand_text(rng, 1000, ascii_alnum),
              rand_unicode(rng, 400), "x" * 1500]

    cases, seen = [], set()

    def add(salt, unit):
        if (salt, unit) in seen:
            return
        seen.add((salt, unit))
        h = hash64(salt, unit)
        cases.append({"salt": salt, "unit": unit, "hash": str(h), "bucket": h % BUCKETS})

    # 1. every hand-picked salt x every hand-picked unit
    for s in salts:
        for u in units:
            add(s, u)

    # 2. XXH3 has distinct code paths by input length (0, 1-3, 4-8, 9-16,
    #    17-128, 129-240, >240 with 1024-byte blocks): sweep the total input
    #    length utf8(salt) + ":" + utf8(unit) across all of them.
    for n in range(0, 260):
        add("", rand_text(rng, n, ascii_alnum))
    for n in list(range(1010, 1040)) + list(range(2040, 2056)) + [4095, 4096, 4097, 10000]:
        add("checkout", rand_text(rng, n - len("checkout:"), ascii_alnum))

    # 3. ':' is not escaped: these two pairs hash identical bytes "a:b:c".
    add("a", "b:c")
    add("a:b", "c")

    # 4. random mix
    for _ in range(250):
        kind = rng.randrange(6)
        salt = rng.choice(salts + [rand_text(rng, rng.randint(1, 30), ascii_alnum)])
        if kind == 0:
            unit = f"user-{rng.randrange(10**7)}"
        elif kind == 1:
            unit = rand_uuid(rng)
        elif kind == 2:
            unit = str(rng.randint(-(2**63), 2**64 - 1))
        elif kind == 3:
            unit = rand_unicode(rng, rng.randint(1, 40))
        elif kind == 4:
            unit = rand_text(rng, rng.randint(1, 300), ascii_alnum + ":@/ ")
        else:
            unit = f"{rand_text(rng, 6, 'abcdefghijklmnopqrstuvwxyz')}@{rand_text(rng, 5, 'abcdefghij')}.example.com"
        add(salt, unit)

    # 5. units (as the split would see them) landing on the bucket boundaries
    #    used in decisions.json and on the extremes 0 / 99999.
    for target in (0, 4999, 5000, 49999, 50000, 99999):
        add("checkout", find_unit("checkout", lambda b, t=target: b == t, limit=2_000_000))

    assert hash64("a", "b:c") == hash64("a:b", "c")
    return cases


# ---------------------------------------------------------------------------
# decisions.json
# ---------------------------------------------------------------------------


def find_unit(salt, pred, limit=10_000, skip=(), prefix="user-"):
    """First unit "user-N" (N = 0, 1, ...) whose bucket under `salt` satisfies pred."""
    for i in range(limit):
        u = f"{prefix}{i}"
        if u not in skip and pred(bucket_of(salt, u)):
            return u
    raise LookupError(f"no unit for salt {salt!r} within {limit}")


class Cases:
    def __init__(self):
        self.cases = []
        self.names = set()

    def add(self, name, releases, key, ctx, version, reason, *, kill_all=False, error_code=None, bucket=None):
        """Record a case; (version, reason, error_code[, bucket]) is the author's intent."""
        assert name not in self.names, f"duplicate name {name}"
        self.names.add(name)
        got = evaluate(releases, kill_all, key, ctx)
        want = {"version": version, "reason": reason, "error_code": error_code}
        assert {k: got[k] for k in want} == want, f"{name}: reference says {got}, intended {want}"
        assert (got["bucket"] is not None) == (reason == "SPLIT"), name
        if bucket is not None:
            assert got["bucket"] == bucket, f"{name}: bucket {got['bucket']} != {bucket}"
        self.cases.append({
            "name": name, "kill_all": kill_all, "releases": releases, "evaluate": key,
            "context": ctx, "expected": got,
        })


def op_release(cond, key="gate"):
    """Release serving "on" when `cond` holds; otherwise the split, which serves baseline "off"."""
    return [{"key": key, "versions": ["off", "on"], "rules": [{"when": [cond], "serve": "on"}]}]


def decision_cases():
    c = Cases()

    # ---------------- operators ----------------
    def op(name, attr, op_, values, ctx_extra, holds):
        ctx = {"targetingKey": "user-1"}
        ctx.update(ctx_extra)
        cond = {"attr": attr, "op": op_, "values": values}
        if holds:
            c.add(f"op {op_}: {name}", op_release(cond), "gate", ctx, "on", "TARGETING_MATCH")
        else:
            c.add(f"op {op_}: {name}", op_release(cond), "gate", ctx, "off", "SPLIT")

    op("string in list", "country", "in", ["NZ", "AU"], {"country": "NZ"}, True)
    op("string not in list", "country", "in", ["NZ", "AU"], {"country": "US"}, False)
    op("case-sensitive", "country", "in", ["NZ"], {"country": "nz"}, False)
    op("number in numbers", "age", "in", [18, 31, 65], {"age": 31}, True)
    op("int attr matches float value 31.0", "age", "in", [31.0], {"age": 31}, True)
    op("number attr vs string value never equal", "age", "in", ["31"], {"age": 31}, False)
    op("string attr vs number value never equal", "age", "in", [31], {"age": "31"}, False)
    op("missing attribute", "country", "in", ["NZ"], {}, False)
    op("null attribute", "country", "in", ["NZ"], {"country": None}, False)
    op("bool attr in [true]", "beta", "in", [True], {"beta": True}, True)
    op("bool true vs number 1 never equal", "beta", "in", [1], {"beta": True}, False)
    op("mixed-type values, string matches", "plan", "in", [1, True, "pro"], {"plan": "pro"}, True)

    op("string not among values", "country", "not_in", ["NZ", "AU"], {"country": "US"}, True)
    op("string among values", "country", "not_in", ["NZ", "AU"], {"country": "AU"}, False)
    op("missing attribute is false", "country", "not_in", ["NZ"], {}, False)
    op("null attribute is false", "country", "not_in", ["NZ"], {"country": None}, False)
    op("number attr vs string values (type mismatch => not equal)", "age", "not_in", ["31"], {"age": 31}, True)
    op("number among numbers", "age", "not_in", [30, 31], {"age": 31}, False)

    op("exact string", "plan", "eq", ["pro"], {"plan": "pro"}, True)
    op("case differs", "plan", "eq", ["pro"], {"plan": "Pro"}, False)
    op("precomposed vs decomposed e-acute differ", "city", "eq", ["Montr\u00e9al"], {"city": "Montre\u0301al"}, False)
    op("unicode exact", "city", "eq", ["東京"], {"city": "東京"}, True)
    op("3 equals 3.0", "seats", "eq", [3.0], {"seats": 3}, True)
    op("string \"3\" vs number 3", "seats", "eq", [3], {"seats": "3"}, False)
    op("bool true", "beta", "eq", [True], {"beta": True}, True)
    op("bool true vs string \"true\"", "beta", "eq", ["true"], {"beta": True}, False)
    op("missing attribute", "plan", "eq", ["pro"], {}, False)
    op("empty string equals empty string", "plan", "eq", [""], {"plan": ""}, True)

    op("different string", "plan", "neq", ["free"], {"plan": "pro"}, True)
    op("same string", "plan", "neq", ["pro"], {"plan": "pro"}, False)
    op("missing attribute is false", "plan", "neq", ["free"], {}, False)
    op("null attribute is false", "plan", "neq", ["free"], {"plan": None}, False)
    op("number vs string value (type mismatch => not equal)", "seats", "neq", ["3"], {"seats": 3}, True)
    op("2.5 vs 2.5", "ratio", "neq", [2.5], {"ratio": 2.5}, False)
    op("bool false vs bool true", "beta", "neq", [True], {"beta": False}, True)

    op("prefix matches", "email", "starts_with", ["admin@", "qa-"], {"email": "qa-bot@corp.example"}, True)
    op("no prefix matches", "email", "starts_with", ["admin@", "qa-"], {"email": "alice@corp.example"}, False)
    op("case-sensitive", "email", "starts_with", ["Admin@"], {"email": "admin@corp.example"}, False)
    op("number attribute is false", "zip", "starts_with", ["90"], {"zip": 90210}, False)
    op("missing attribute", "email", "starts_with", ["admin@"], {}, False)
    op("prefix on targetingKey", "targetingKey", "starts_with", ["internal-"], {"targetingKey": "internal-ops-3"}, True)

    op("suffix matches", "email", "ends_with", ["@example.com", "@corp.example"], {"email": "alice@corp.example"}, True)
    op("no suffix matches", "email", "ends_with", ["@example.com"], {"email": "alice@example.org"}, False)
    op("unicode suffix", "name", "ends_with", ["🚀"], {"name": "launch 🚀"}, True)
    op("bool attribute is false", "beta", "ends_with", ["e"], {"beta": True}, False)

    op("substring matches", "ua", "contains", ["iPhone", "Android"], {"ua": "Mozilla/5.0 (Linux; Android 14)"}, True)
    op("no substring", "ua", "contains", ["iPhone", "Android"], {"ua": "Mozilla/5.0 (X11; Linux x86_64)"}, False)
    op("case-sensitive", "ua", "contains", ["android"], {"ua": "Android 14"}, False)
    op("unicode substring", "greeting", "contains", ["日本"], {"greeting": "こんにちは日本語"}, True)
    op("empty value is a substring of any string", "ua", "contains", [""], {"ua": "anything"}, True)
    op("number attribute is false", "build", "contains", ["12"], {"build": 1234}, False)

    op("31 < 40", "age", "lt", [40], {"age": 31}, True)
    op("40 < 40 is false", "age", "lt", [40], {"age": 40}, False)
    op("numeric string \"-2\" < 0", "delta", "lt", [0], {"delta": "-2"}, True)
    op("numeric string \"10\" < 9 is false (numeric, not lexicographic)", "count", "lt", [9], {"count": "10"}, False)
    op("non-numeric string is false", "age", "lt", [100], {"age": "abc"}, False)
    op("string with trailing text is false", "weight", "lt", [100], {"weight": "3.5kg"}, False)
    op("empty string is false", "age", "lt", [100], {"age": ""}, False)
    op("bool attribute is false", "beta", "lt", [5], {"beta": False}, False)
    op("missing attribute", "age", "lt", [40], {}, False)

    op("40 <= 40", "age", "lte", [40], {"age": 40}, True)
    op("2.5 <= 2.5 (floats)", "ratio", "lte", [2.5], {"ratio": 2.5}, True)
    op("41 <= 40 is false", "age", "lte", [40], {"age": 41}, False)

    op("numeric string \"3.5\" > 3", "score", "gt", [3], {"score": "3.5"}, True)
    op("numeric string \"10\" > 9 (numeric, not lexicographic)", "count", "gt", [9], {"count": "10"}, True)
    op("3 > 3 is false", "score", "gt", [3], {"score": 3}, False)
    op("-1.5 > -2", "temp", "gt", [-2], {"temp": -1.5}, True)
    op("version-like string \"1.2.3\" is not a number", "score", "gt", [1], {"score": "1.2.3"}, False)

    op("18 >= 18", "age", "gte", [18], {"age": 18}, True)
    op("17 >= 18 is false", "age", "gte", [18], {"age": 17}, False)
    op("float value 17.5, attr 18", "age", "gte", [17.5], {"age": 18}, True)
    op("missing attribute", "age", "gte", [0], {}, False)

    # semver
    op("same version", "app_version", "semver_eq", ["1.2.3"], {"app_version": "1.2.3"}, True)
    op("short \"1.2\" equals \"1.2.0\"", "app_version", "semver_eq", ["1.2.0"], {"app_version": "1.2"}, True)
    op("short \"2\" equals \"v2.0.0\"", "app_version", "semver_eq", ["v2.0.0"], {"app_version": "2"}, True)
    op("\"v\" prefix ignored", "app_version", "semver_eq", ["1.2.3"], {"app_version": "v1.2.3"}, True)
    op("uppercase \"V\" prefix ignored", "app_version", "semver_eq", ["1.2.3"], {"app_version": "V1.2.3"}, True)
    op("leading zeros are numeric", "app_version", "semver_eq", ["1.2.3"], {"app_version": "01.002.3"}, True)
    op("build metadata ignored", "app_version", "semver_eq", ["1.2.3+build.1"], {"app_version": "1.2.3+exp.sha.5114f85"}, True)
    op("pre-release differs from release", "app_version", "semver_eq", ["1.2.3"], {"app_version": "1.2.3-rc.1"}, False)
    op("invalid attribute \"1.2.3.4\"", "app_version", "semver_eq", ["1.2.3"], {"app_version": "1.2.3.4"}, False)
    op("number attribute is not a version", "app_version", "semver_eq", ["2"], {"app_version": 2}, False)
    op("missing attribute", "app_version", "semver_eq", ["1.2.3"], {}, False)

    chain = ["1.2.3-alpha.1", "1.2.3-alpha.beta", "1.2.3-beta", "1.2.3-beta.2",
             "1.2.3-beta.11", "1.2.3-rc.1", "1.2.3"]
    for lo, hi in zip(chain, chain[1:]):
        op(f"{lo} < {hi}", "app_version", "semver_lt", [hi], {"app_version": lo}, True)
        op(f"{hi} < {lo} is false", "app_version", "semver_lt", [lo], {"app_version": hi}, False)
    op("1.2.3-alpha.1 < 1.2.3-alpha.beta (numeric id < alphanumeric), reversed operands via gt",
       "app_version", "semver_gt", ["1.2.3-alpha.1"], {"app_version": "1.2.3-alpha.beta"}, True)
    op("1.10.0 > 1.9.0 (numeric, not lexicographic)", "app_version", "semver_gt", ["1.9.0"], {"app_version": "1.10.0"}, True)
    op("2.0.0-rc.1 > 1.9.9", "app_version", "semver_gt", ["1.9.9"], {"app_version": "2.0.0-rc.1"}, True)
    op("1.2.3 > 1.2.3 is false", "app_version", "semver_gt", ["1.2.3"], {"app_version": "1.2.3"}, False)
    op("short \"2-rc.1\" < \"2\"", "app_version", "semver_lt", ["2"], {"app_version": "2-rc.1"}, True)
    op("invalid attribute \"abc\"", "app_version", "semver_lt", ["9.9.9"], {"app_version": "abc"}, False)
    op("invalid attribute \"1..2\"", "app_version", "semver_lt", ["9.9.9"], {"app_version": "1..2"}, False)
    op("invalid attribute with trailing dot \"1.2.\"", "app_version", "semver_lt", ["9.9.9"], {"app_version": "1.2."}, False)
    op("invalid attribute empty string", "app_version", "semver_lt", ["9.9.9"], {"app_version": ""}, False)
    op("1.2.3 <= 1.2.3", "app_version", "semver_lte", ["1.2.3"], {"app_version": "1.2.3"}, True)
    op("1.2.4 <= v1.2.3 is false", "app_version", "semver_lte", ["v1.2.3"], {"app_version": "1.2.4"}, False)
    op("1.2.3-beta.11 <= 1.2.3-beta.2 is false", "app_version", "semver_lte", ["1.2.3-beta.2"], {"app_version": "1.2.3-beta.11"}, False)
    op("1.2 >= 1.2.0", "app_version", "semver_gte", ["1.2.0"], {"app_version": "1.2"}, True)
    op("1.2.3-rc.1 >= 1.2.3 is false", "app_version", "semver_gte", ["1.2.3"], {"app_version": "1.2.3-rc.1"}, False)
    op("alpha.beta >= alpha.1.2 (alphanumeric id beats numeric)", "app_version", "semver_gte",
       ["1.0.0-alpha.1.2"], {"app_version": "1.0.0-alpha.beta"}, True)

    # ---------------- release-level behaviour ----------------
    full = {
        "key": "checkout", "versions": ["v1", "v2", "v3"], "unit": "targetingKey", "salt": "checkout",
        "bucketing": ALGORITHM, "allocation": {"v2": 5000, "v3": 20000},
        "overrides": {"user-1": "v3"},
        "rules": [{"when": [{"attr": "country", "op": "in", "values": ["NZ", "AU"]}], "serve": "v2"}],
        "audience": [{"attr": "plan", "op": "eq", "values": ["pro"]}],
        "killed": False, "description": "new checkout flow",
    }
    other = {"key": "search-v2", "versions": ["old", "new"], "allocation": {"new": 50000}}
    pro = {"plan": "pro"}

    # not found
    c.add("not found: empty environment", [], "checkout", {"targetingKey": "user-1"}, None, "ERROR", error_code="FLAG_NOT_FOUND")
    c.add("not found: other releases exist", [full, other], "payments", {"targetingKey": "user-1"}, None, "ERROR", error_code="FLAG_NOT_FOUND")
    c.add("not found: keys are case-sensitive", [full], "Checkout", {"targetingKey": "user-1"}, None, "ERROR", error_code="FLAG_NOT_FOUND")
    c.add("not found: beats kill_all", [full], "payments", {"targetingKey": "user-1"}, None, "ERROR", kill_all=True, error_code="FLAG_NOT_FOUND")
    c.add("not found: beats missing unit", [other], "checkout", {}, None, "ERROR", error_code="FLAG_NOT_FOUND")

    # kill switches
    c.add("kill_all: serves baseline", [full, other], "checkout", {"targetingKey": "user-5", **pro}, "v1", "DISABLED", kill_all=True)
    c.add("kill_all: beats override", [full], "checkout", {"targetingKey": "user-1", **pro}, "v1", "DISABLED", kill_all=True)
    c.add("kill_all: applies even without a unit", [other], "search-v2", {}, "old", "DISABLED", kill_all=True)
    killed = dict(full, killed=True)
    c.add("killed release: beats override", [killed, other], "checkout", {"targetingKey": "user-1"}, "v1", "DISABLED")
    c.add("killed release: beats matching rule", [killed], "checkout", {"targetingKey": "user-5", "country": "NZ"}, "v1", "DISABLED")
    c.add("killed release: other releases unaffected", [killed, other], "search-v2",
          {"targetingKey": find_unit("search-v2", lambda b: b < 50000)}, "new", "SPLIT")
    c.add("killed false explicitly: normal evaluation", [dict(other, killed=False)], "search-v2",
          {"targetingKey": find_unit("search-v2", lambda b: b >= 50000)}, "old", "SPLIT")

    # overrides
    c.add("override: beats matching rule", [full], "checkout", {"targetingKey": "user-1", "country": "NZ"}, "v3", "TARGETING_MATCH")
    c.add("override: beats failing audience", [full], "checkout", {"targetingKey": "user-1", "plan": "free"}, "v3", "TARGETING_MATCH")
    c.add("override: may pin the baseline", [dict(other, overrides={"user-7": "old"})], "search-v2", {"targetingKey": "user-7"}, "old", "TARGETING_MATCH")
    numeric = {"key": "ranker", "versions": ["a", "b"], "overrides": {"42": "b", "-7": "b"}}
    c.add("override: numeric unit 42 matches key \"42\"", [numeric], "ranker", {"targetingKey": 42}, "b", "TARGETING_MATCH")
    c.add("override: negative numeric unit -7 matches key \"-7\"", [numeric], "ranker", {"targetingKey": -7}, "b", "TARGETING_MATCH")
    c.add("override: string unit \"42\" matches key \"42\"", [numeric], "ranker", {"targetingKey": "42"}, "b", "TARGETING_MATCH")
    c.add("override: numeric unit 43 has no override, split", [numeric], "ranker", {"targetingKey": 43}, "a", "SPLIT")
    c.add("override: bool unit true matches key \"true\"", [dict(numeric, overrides={"true": "b"})], "ranker", {"targetingKey": True}, "b", "TARGETING_MATCH")
    c.add("override: empty-string unit matches key \"\"", [dict(numeric, overrides={"": "b"})], "ranker", {"targetingKey": ""}, "b", "TARGETING_MATCH")
    u = find_unit("search-v2", lambda b: b >= 50000)
    c.add("override: keys are case-sensitive", [dict(other, overrides={u.upper(): "new"})], "search-v2",
          {"targetingKey": u}, "old", "SPLIT")
    node = {"key": "edge-cache", "versions": ["stable", "canary"], "unit": "node_id",
            "overrides": {"node-eu-1": "canary", "user-1": "canary"}, "allocation": {}}
    c.add("override: keyed on non-default unit attribute node_id", [node], "edge-cache",
          {"node_id": "node-eu-1", "targetingKey": "user-9"}, "canary", "TARGETING_MATCH")
    c.add("override: targetingKey ignored when unit is node_id", [node], "edge-cache",
          {"node_id": "node-us-2", "targetingKey": "user-1"}, "stable", "SPLIT")

    # rules
    two_rules = {
        "key": "checkout", "versions": ["v1", "v2", "v3"],
        "rules": [
            {"when": [{"attr": "country", "op": "in", "values": ["NZ"]}], "serve": "v3"},
            {"when": [{"attr": "beta", "op": "eq", "values": [True]}], "serve": "v2"},
            {"when": [], "serve": "v1"},
        ],
        "allocation": {"v2": 33333, "v3": 33333},
    }
    c.add("rules: first matching rule wins when several match", [two_rules], "checkout",
          {"targetingKey": "user-3", "country": "NZ", "beta": True}, "v3", "TARGETING_MATCH")
    c.add("rules: second rule when first does not match", [two_rules], "checkout",
          {"targetingKey": "user-3", "country": "AU", "beta": True}, "v2", "TARGETING_MATCH")
    c.add("rules: empty when matches everything (catch-all serves baseline, no split)", [two_rules], "checkout",
          {"targetingKey": "user-3", "country": "AU", "beta": False}, "v1", "TARGETING_MATCH")
    c.add("rules: apply without any unit", [two_rules], "checkout", {"country": "NZ"}, "v3", "TARGETING_MATCH")
    c.add("rules: empty-when catch-all applies to an empty context", [two_rules], "checkout", {}, "v1", "TARGETING_MATCH")
    multi = {"key": "checkout", "versions": ["v1", "v2"], "rules": [
        {"when": [{"attr": "country", "op": "in", "values": ["NZ"]},
                  {"attr": "age", "op": "gte", "values": [18]}], "serve": "v2"}]}
    c.add("rules: all conditions of a rule must hold (one fails)", [multi], "checkout",
          {"targetingKey": "user-3", "country": "NZ", "age": 17}, "v1", "SPLIT")
    c.add("rules: all conditions of a rule hold", [multi], "checkout",
          {"targetingKey": "user-3", "country": "NZ", "age": 31}, "v2", "TARGETING_MATCH")
    c.add("rules: no match and no unit -> TARGETING_KEY_MISSING", [multi], "checkout",
          {"country": "US"}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    c.add("full release: rule beats failing audience", [full], "checkout",
          {"targetingKey": "user-5", "country": "AU", "plan": "free"}, "v2", "TARGETING_MATCH")

    # audience
    c.add("audience: fails -> DEFAULT baseline", [full], "checkout", {"targetingKey": "user-5", "plan": "free"}, "v1", "DEFAULT")
    c.add("audience: missing attribute fails -> DEFAULT", [full], "checkout", {"targetingKey": "user-5"}, "v1", "DEFAULT")
    c.add("audience: fails before missing unit is checked -> DEFAULT, no error", [full], "checkout", {"plan": "free"}, "v1", "DEFAULT")
    c.add("audience: passes but unit missing -> TARGETING_KEY_MISSING", [full], "checkout", {"plan": "pro"}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    u = find_unit("checkout", lambda b: b < 5000, skip={"user-1"})
    c.add("audience: passes -> split lands in v2 slot", [full], "checkout", {"targetingKey": u, **pro}, "v2", "SPLIT")
    multi_aud = dict(other, audience=[{"attr": "plan", "op": "eq", "values": ["pro"]},
                                      {"attr": "app_version", "op": "semver_gte", "values": ["2.0.0"]}])
    c.add("audience: every condition must hold (one fails)", [multi_aud], "search-v2",
          {"targetingKey": "user-2", "plan": "pro", "app_version": "1.9.0"}, "old", "DEFAULT")
    u = find_unit("search-v2", lambda b: b < 50000)
    c.add("audience: every condition holds -> split", [multi_aud], "search-v2",
          {"targetingKey": u, "plan": "pro", "app_version": "2.1.0"}, "new", "SPLIT")

    # unit presence / kinds
    plain = {"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 50000}}
    c.add("unit: missing targetingKey -> TARGETING_KEY_MISSING", [plain], "checkout", {"country": "NZ"}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    c.add("unit: null -> missing", [plain], "checkout", {"targetingKey": None}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    c.add("unit: non-integral number 1.5 -> missing", [plain], "checkout", {"targetingKey": 1.5}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    c.add("unit: array -> missing", [plain], "checkout", {"targetingKey": ["user-1"]}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    c.add("unit: object -> missing", [plain], "checkout", {"targetingKey": {"id": "user-1"}}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    b_empty = bucket_of("checkout", "")
    want = "v2" if b_empty < 50000 else "v1"
    c.add(f"unit: empty string is present and split (bucket {b_empty})", [plain], "checkout", {"targetingKey": ""}, want, "SPLIT", bucket=b_empty)
    b_true = bucket_of("checkout", "true")
    c.add(f"unit: boolean true splits as \"true\" (bucket {b_true})", [plain], "checkout", {"targetingKey": True},
          "v2" if b_true < 50000 else "v1", "SPLIT", bucket=b_true)
    b_false = bucket_of("checkout", "false")
    c.add(f"unit: boolean false splits as \"false\" (bucket {b_false})", [plain], "checkout", {"targetingKey": False},
          "v2" if b_false < 50000 else "v1", "SPLIT", bucket=b_false)
    for n in (42, -7, 0, 18446744073709551615):
        bn = bucket_of("checkout", str(n))
        c.add(f"unit: integer {n} splits as \"{n}\" (bucket {bn})", [plain], "checkout", {"targetingKey": n},
              "v2" if bn < 50000 else "v1", "SPLIT", bucket=bn)
    for s in ("日本語", "🚀", "e\u0301", "tenant:42:user:17"):
        bs = bucket_of("checkout", s)
        c.add(f"unit: string {s!r} (bucket {bs})", [plain], "checkout", {"targetingKey": s},
              "v2" if bs < 50000 else "v1", "SPLIT", bucket=bs)
    tenant = {"key": "billing", "versions": ["v1", "v2"], "unit": "tenant_id", "allocation": {"v2": 30000}}
    t_in = find_unit("billing", lambda b: b < 30000, prefix="tenant-")
    t_out = find_unit("billing", lambda b: b >= 30000, prefix="tenant-")
    c.add("unit attribute tenant_id: lands in v2", [tenant], "billing", {"tenant_id": t_in, "targetingKey": t_out}, "v2", "SPLIT")
    c.add("unit attribute tenant_id: lands in baseline", [tenant], "billing", {"tenant_id": t_out, "targetingKey": t_in}, "v1", "SPLIT")
    c.add("unit attribute tenant_id missing though targetingKey present -> TARGETING_KEY_MISSING",
          [tenant], "billing", {"targetingKey": t_in}, "v1", "ERROR", error_code="TARGETING_KEY_MISSING")
    c.add("unit attribute node_id: integer node id is present", [dict(node, allocation={"canary": 100000})], "edge-cache",
          {"node_id": 7}, "canary", "SPLIT")

    # salt
    salted = {"key": "checkout-2024", "versions": ["v1", "v2"], "salt": "checkout", "allocation": {"v2": 5000}}
    u2 = next(f"user-{i}" for i in range(10000)
              if bucket_of("checkout", f"user-{i}") < 5000 and bucket_of("checkout-2024", f"user-{i}") >= 5000)
    c.add("salt: custom salt \"checkout\" used instead of key", [salted], "checkout-2024", {"targetingKey": u2}, "v2", "SPLIT",
          bucket=bucket_of("checkout", u2))
    c.add("salt: same unit without custom salt hashes with the key", [dict(salted, salt="checkout-2024")], "checkout-2024",
          {"targetingKey": u2}, "v1", "SPLIT", bucket=bucket_of("checkout-2024", u2))
    empty_salt = {"key": "pricing", "versions": ["v1", "v2"], "salt": "", "allocation": {"v2": 50000}}
    u3 = find_unit("", lambda b: b < 50000)
    c.add("salt: empty-string salt hashes \":\" + unit", [empty_salt], "pricing", {"targetingKey": u3}, "v2", "SPLIT",
          bucket=bucket_of("", u3))
    uni_salt = {"key": "launch", "versions": ["v1", "v2"], "salt": "🚀café", "allocation": {"v2": 20000}}
    u4 = find_unit("🚀café", lambda b: b < 20000)
    c.add("salt: unicode salt", [uni_salt], "launch", {"targetingKey": u4}, "v2", "SPLIT")

    # ---------------- split geometry ----------------
    # 1 candidate: S = 100000
    one = {"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 5000}, "bucketing": ALGORITHM}
    u = find_unit("checkout", lambda b: b < 5000)
    c.add("split 1 candidate: unit in v2 range at 5%", [one], "checkout", {"targetingKey": u}, "v2", "SPLIT")
    u = find_unit("checkout", lambda b: b >= 5000)
    c.add("split 1 candidate: unit outside v2 range at 5%", [one], "checkout", {"targetingKey": u}, "v1", "SPLIT")
    u = find_unit("checkout", lambda b: b == 4999, limit=2_000_000)
    c.add("split 1 candidate: bucket 4999 is the last bucket of a 5000 allocation", [one], "checkout", {"targetingKey": u}, "v2", "SPLIT", bucket=4999)
    u = find_unit("checkout", lambda b: b == 5000, limit=2_000_000)
    c.add("split 1 candidate: bucket 5000 is just outside a 5000 allocation", [one], "checkout", {"targetingKey": u}, "v1", "SPLIT", bucket=5000)
    u = find_unit("checkout", lambda b: b == 0, limit=2_000_000)
    c.add("split 1 candidate: bucket 0 with allocation 1", [dict(one, allocation={"v2": 1})], "checkout", {"targetingKey": u}, "v2", "SPLIT", bucket=0)
    c.add("split 1 candidate: bucket 0 with allocation 0", [dict(one, allocation={"v2": 0})], "checkout", {"targetingKey": u}, "v1", "SPLIT", bucket=0)
    u = find_unit("checkout", lambda b: b == 99999, limit=2_000_000)
    c.add("split 1 candidate: bucket 99999 with full allocation 100000", [dict(one, allocation={"v2": 100000})], "checkout", {"targetingKey": u}, "v2", "SPLIT", bucket=99999)
    c.add("split 1 candidate: bucket 99999 with allocation 99999", [dict(one, allocation={"v2": 99999})], "checkout", {"targetingKey": u}, "v1", "SPLIT", bucket=99999)
    c.add("split 1 candidate: allocation missing entirely -> baseline", [{"key": "checkout", "versions": ["v1", "v2"]}], "checkout",
          {"targetingKey": "user-1"}, "v1", "SPLIT")

    # 2 candidates: S = 50000; v2 owns [0, a2), v3 owns [50000, 50000 + a3)
    two = {"key": "checkout", "versions": ["v1", "v2", "v3"], "allocation": {"v2": 10000, "v3": 20000}}
    for lo, hi, want, label in [(0, 10000, "v2", "in v2 slot"), (10000, 50000, "v1", "in gap after v2"),
                                (50000, 70000, "v3", "in v3 slot"), (70000, 100000, "v1", "in gap after v3")]:
        u = find_unit("checkout", lambda b, lo=lo, hi=hi: lo <= b < hi)
        c.add(f"split 2 candidates: unit {label} [{lo},{hi})", [two], "checkout", {"targetingKey": u}, want, "SPLIT")
    u = find_unit("checkout", lambda b: b == 50000, limit=2_000_000)
    c.add("split 2 candidates: bucket 50000 is the first bucket of v3's slot", [two], "checkout", {"targetingKey": u}, "v3", "SPLIT", bucket=50000)
    u = find_unit("checkout", lambda b: b == 49999, limit=2_000_000)
    c.add("split 2 candidates: bucket 49999 with v2 at full slot 50000", [dict(two, allocation={"v2": 50000, "v3": 0})], "checkout",
          {"targetingKey": u}, "v2", "SPLIT", bucket=49999)
    c.add("split 2 candidates: bucket 49999 with v2 at 49999 is baseline", [dict(two, allocation={"v2": 49999, "v3": 50000})], "checkout",
          {"targetingKey": u}, "v1", "SPLIT", bucket=49999)
    only_v3 = {"key": "checkout", "versions": ["v1", "v2", "v3"], "allocation": {"v3": 25000}}
    u = find_unit("checkout", lambda b: b < 25000)
    c.add("split 3 versions, only v3 allocated: unit in [0,25000) is baseline (v2 has 0)", [only_v3], "checkout",
          {"targetingKey": u}, "v1", "SPLIT")
    u = find_unit("checkout", lambda b: 50000 <= b < 75000)
    c.add("split 3 versions, only v3 allocated: unit in [50000,75000) is v3", [only_v3], "checkout",
          {"targetingKey": u}, "v3", "SPLIT")
    u = find_unit("checkout", lambda b: 75000 <= b)
    c.add("split 3 versions, only v3 allocated: unit in [75000,100000) is baseline", [only_v3], "checkout",
          {"targetingKey": u}, "v1", "SPLIT")

    # 3 candidates: S = 33333; slots [0,33333), [33333,66666), [66666,99999); 99999 belongs to nobody
    three = {"key": "checkout", "versions": ["control", "a", "b", "c"],
             "allocation": {"a": 33333, "b": 0, "c": 1000}, "description": "three-way test"}
    for lo, hi, want, label in [(0, 33333, "a", "in a's full slot"), (33333, 66666, "control", "in b's slot, b has allocation 0"),
                                (66666, 67666, "c", "in c's slot"), (67666, 99999, "control", "in gap after c")]:
        u = find_unit("checkout", lambda b, lo=lo, hi=hi: lo <= b < hi)
        c.add(f"split 3 candidates: unit {label} [{lo},{hi})", [three], "checkout", {"targetingKey": u}, want, "SPLIT")
    u = find_unit("checkout", lambda b: b == 33333, limit=2_000_000)
    c.add("split 3 candidates: bucket 33333 starts b's slot (S = 100000 // 3)",
          [dict(three, allocation={"a": 33333, "b": 1, "c": 0})], "checkout", {"targetingKey": u}, "b", "SPLIT", bucket=33333)
    u = find_unit("checkout", lambda b: b == 66665, limit=2_000_000)
    c.add("split 3 candidates: bucket 66665 is the last bucket of b's full slot",
          [dict(three, allocation={"a": 0, "b": 33333, "c": 0})], "checkout", {"targetingKey": u}, "b", "SPLIT", bucket=66665)
    u = find_unit("checkout", lambda b: b == 99999, limit=2_000_000)
    c.add("split 3 candidates: bucket 99999 is beyond every slot even when all are full",
          [dict(three, allocation={"a": 33333, "b": 33333, "c": 33333})], "checkout", {"targetingKey": u}, "control", "SPLIT", bucket=99999)

    # 4 candidates: S = 25000
    four = {"key": "search", "versions": ["base", "c1", "c2", "c3", "c4"], "salt": "search-v2",
            "allocation": {"c1": 25000, "c2": 12500, "c3": 0, "c4": 1}}
    u = find_unit("search-v2", lambda b: b < 25000)
    c.add("split 4 candidates: unit in c1's full slot", [four], "search", {"targetingKey": u}, "c1", "SPLIT")
    u = find_unit("search-v2", lambda b: 25000 <= b < 37500)
    c.add("split 4 candidates: unit in c2's half slot", [four], "search", {"targetingKey": u}, "c2", "SPLIT")
    u = find_unit("search-v2", lambda b: 37500 <= b < 50000)
    c.add("split 4 candidates: unit in gap after c2", [four], "search", {"targetingKey": u}, "base", "SPLIT")
    u = find_unit("search-v2", lambda b: 50000 <= b < 75000)
    c.add("split 4 candidates: unit in c3's slot, c3 has allocation 0", [four], "search", {"targetingKey": u}, "base", "SPLIT")
    u = find_unit("search-v2", lambda b: b == 75000, limit=2_000_000)
    c.add("split 4 candidates: bucket 75000 is c4's only bucket (allocation 1)", [four], "search", {"targetingKey": u}, "c4", "SPLIT", bucket=75000)
    u = find_unit("search-v2", lambda b: 75001 <= b)
    c.add("split 4 candidates: unit in c4's slot after its single bucket", [four], "search", {"targetingKey": u}, "base", "SPLIT")

    # the environment holds several releases; only the evaluated one matters
    u = find_unit("search-v2", lambda b: b < 50000)
    c.add("environment: evaluates the requested release among several", [full, other, four], "search-v2", {"targetingKey": u}, "new", "SPLIT")
    c.add("environment: release \"search\" salted \"search-v2\" reuses search-v2's buckets",
          [other, four], "search", {"targetingKey": u}, "c1" if bucket_of("search-v2", u) < 25000 else "base", "SPLIT")

    # random-ish split sweep with a full-featured release (deterministic)
    rng = random.Random(7)
    sweep = {"key": "new-pricing-page", "versions": ["v1", "v2", "v3"], "allocation": {"v2": 12345, "v3": 50000},
             "audience": [{"attr": "country", "op": "not_in", "values": ["CN"]}]}
    for _ in range(12):
        u = f"user-{rng.randrange(10000)}"
        if any(case["context"].get("targetingKey") == u and case["evaluate"] == "new-pricing-page" for case in c.cases):
            continue
        b = bucket_of("new-pricing-page", u)
        want = "v2" if b < 12345 else ("v3" if 50000 <= b else "v1")
        c.add(f"sweep: {u} in new-pricing-page (bucket {b})", [sweep], "new-pricing-page", {"targetingKey": u, "country": "DE"}, want, "SPLIT")

    return c.cases


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def write_bucketing(path, cases):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write('{"algorithm": "%s",\n "cases": [\n' % ALGORITHM)
        for i, case in enumerate(cases):
            f.write("  " + json.dumps(case, ensure_ascii=False) + ("," if i + 1 < len(cases) else "") + "\n")
        f.write(" ]\n}\n")


def write_decisions(path, cases):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False, indent=2)
        f.write("\n")


def main():
    self_check()
    b = bucketing_cases()
    d = decision_cases()
    assert len(b) >= 1200, len(b)
    assert len(d) >= 80, len(d)
    write_bucketing(os.path.join(HERE, "bucketing.json"), b)
    write_decisions(os.path.join(HERE, "decisions.json"), d)
    print(f"bucketing.json: {len(b)} cases; decisions.json: {len(d)} cases")


if __name__ == "__main__":
    main()
