"""Replays the recorded-style vendor exchanges in tests/conformance/*.yaml against the sandbox.

Each case was written from the vendor reference sheets (/work/shared/reference/*.md), not from
what the sandbox answers: the request goes over real HTTP (`requests`) to a started `Sandbox`, and
the answer's status, key body fields and headers must match. The format is described in
tests/conformance/README.md. One sandbox serves a whole file; a case with `fresh: true`, its own
`seed`, `variants` or `options` gets a sandbox of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field, fields as dataclass_fields
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

from reconciler.sandbox import Sandbox, SandboxOptions

HERE = Path(__file__).parent / "conformance"
SANDBOX_DIR = Path(__file__).parent.parent / "reconciler" / "sandbox"
MIN_CASES = {"mailchimp": 40, "hubspot": 30}
VENDORS = ("mailchimp", "hubspot")
FILE_KEYS = {"vendor", "seed", "variants", "options", "vars", "cases"}
CASE_KEYS = {"name", "source", "fresh", "seed", "variants", "options", "setup", "request", "expect"}
REQUEST_KEYS = {"method", "path", "query", "body", "raw_body", "headers", "auth"}
STEP_KEYS = REQUEST_KEYS | {"status", "repeat", "save", "background"}
EXPECT_KEYS = {"status", "body", "headers", "empty_body"}
AUTH_MODES = {"bearer", "basic", "none", "wrong"}
OPTION_NAMES = {f.name for f in dataclass_fields(SandboxOptions)} - {"variants"}
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\(([^)]*)\))?\}")
TIMEOUT = 10


# ----- loading ---------------------------------------------------------------------------------


@dataclass
class Case:
    file: str
    vendor: str
    index: int
    data: dict[str, Any]
    file_data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.data.get("name", f"case {self.index}"))

    @property
    def own_sandbox(self) -> bool:
        return bool(self.data.get("fresh")) or any(k in self.data for k in ("seed", "variants", "options"))

    def where(self) -> str:
        return f"{self.file} :: {self.name}\n  source: {self.data.get('source', '(none)')}"


def case_files() -> list[Path]:
    return sorted(HERE.glob("*.yaml"))


def load_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise AssertionError(f"{path.name}: the top level must be a mapping")
    return data


def all_cases() -> list[Case]:
    out = []
    for path in case_files():
        data = load_file(path)
        for index, case in enumerate(data.get("cases") or []):
            out.append(Case(path.name, str(data.get("vendor")), index, case if isinstance(case, dict) else {}, data))
    return out


def format_problems(path: Path, data: dict[str, Any]) -> list[str]:
    """Everything wrong with a file's shape (unknown keys would otherwise silently check nothing)."""
    problems = [f"unknown top-level key {k!r}" for k in data if k not in FILE_KEYS]
    if data.get("vendor") not in VENDORS:
        problems.append(f"vendor must be one of {VENDORS}, not {data.get('vendor')!r}")
    problems += [f"options: unknown SandboxOptions field {k!r}" for k in data.get("options") or {} if k not in OPTION_NAMES]
    cases = data.get("cases")
    if not isinstance(cases, list) or not cases:
        return problems + ["cases: must be a non-empty list"]
    names: set[str] = set()
    for index, case in enumerate(cases):
        at = f"cases[{index}]"
        if not isinstance(case, dict):
            problems.append(f"{at}: must be a mapping")
            continue
        at = f"cases[{index}] ({case.get('name')})"
        problems += [f"{at}: unknown key {k!r}" for k in case if k not in CASE_KEYS]
        name = case.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{at}: needs a name")
        elif name in names:
            problems.append(f"{at}: duplicate name")
        names.add(str(name))
        source = case.get("source")
        if not isinstance(source, str) or not source.strip() or "\n" in source.strip():
            problems.append(f"{at}: needs a one-line source note")
        problems += [f"{at}: options: unknown SandboxOptions field {k!r}" for k in case.get("options") or {}
                     if k not in OPTION_NAMES]
        request = case.get("request")
        if not isinstance(request, dict) or not request.get("method") or not request.get("path"):
            problems.append(f"{at}: request needs method and path")
        else:
            problems += [f"{at}: request: unknown key {k!r}" for k in request if k not in REQUEST_KEYS]
            if request.get("auth", "bearer") not in AUTH_MODES:
                problems.append(f"{at}: request.auth must be one of {sorted(AUTH_MODES)}")
        for step_index, step in enumerate(case.get("setup") or []):
            if not isinstance(step, dict) or not step.get("method") or not step.get("path"):
                problems.append(f"{at}: setup[{step_index}] needs method and path")
                continue
            problems += [f"{at}: setup[{step_index}]: unknown key {k!r}" for k in step if k not in STEP_KEYS]
        expect = case.get("expect")
        if not isinstance(expect, dict) or not isinstance(expect.get("status"), int):
            problems.append(f"{at}: expect needs an integer status")
        else:
            problems += [f"{at}: expect: unknown key {k!r}" for k in expect if k not in EXPECT_KEYS]
    return problems


# ----- placeholders ----------------------------------------------------------------------------


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


def resolve(value: Any, names: dict[str, Any]) -> Any:
    """Fills `{name}` from the file's `vars` and saved answers, and `{subscriber_hash(email)}`."""
    if isinstance(value, str):
        def one(found: re.Match[str]) -> str:
            name, arg = found.group(1), found.group(2)
            if arg is not None:
                if name == "subscriber_hash":
                    return subscriber_hash(resolve(arg, names))
                raise KeyError(f"unknown placeholder function {name}()")
            if name not in names:
                raise KeyError(f"unknown placeholder {{{name}}} (define it in `vars:` or `save:` it first)")
            return str(names[name])
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole.group(2) is None and whole.group(1) in names:
            return names[whole.group(1)]  # keeps the saved value's type (a number, a list)
        return PLACEHOLDER.sub(one, value)
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if isinstance(value, dict):
        if set(value) == {"~repeat", "item"}:  # a long list written short: `{~repeat: 101, item: {id: "1"}}`
            return [resolve(value["item"], names) for _ in range(int(value["~repeat"]))]
        return {resolve(k, names): resolve(v, names) for k, v in value.items()}
    return value


def dig(body: Any, path: str) -> Any:
    """The value at a dotted path (`paging.next.after`, `results.0.id`) of a JSON answer."""
    here = body
    for part in path.split("."):
        if isinstance(here, list) and part.lstrip("-").isdigit():
            here = here[int(part)]
        elif isinstance(here, dict) and part in here:
            here = here[part]
        else:
            raise KeyError(f"the answer has no {path!r} (stopped at {part!r})")
    return here


# ----- matching --------------------------------------------------------------------------------

ABSENT = object()


def mismatches(expected: Any, actual: Any, at: str = "body") -> list[str]:
    """Where `actual` fails `expected`: mappings match as subsets, lists item by item in any order with
    equal length, scalars exactly; strings starting with `~` are matchers (README)."""
    if isinstance(expected, str) and expected.startswith("~"):
        return matcher(expected, actual, at)
    if actual is ABSENT:
        return [f"{at}: missing (expected {expected!r})"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{at}: expected an object, got {short(actual)}"]
        out: list[str] = []
        for key, value in expected.items():
            out += mismatches(value, actual.get(key, ABSENT), f"{at}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{at}: expected a list, got {short(actual)}"]
        if len(expected) != len(actual):
            return [f"{at}: expected {len(expected)} items, got {len(actual)}: {short(actual)}"]
        unused = list(range(len(actual)))
        for index, item in enumerate(expected):
            hit = next((i for i in unused if not mismatches(item, actual[i])), None)
            if hit is None:
                return [f"{at}[{index}]: no item matches {item!r} in {short(actual)}"]
            unused.remove(hit)
        return []
    if isinstance(expected, bool) or isinstance(actual, bool):
        ok = expected is actual
    else:
        ok = expected == actual
    return [] if ok else [f"{at}: expected {expected!r}, got {short(actual)}"]


def matcher(spec: str, actual: Any, at: str) -> list[str]:
    kind, _, arg = spec[1:].partition(":")
    if kind == "absent":
        return [] if actual is ABSENT else [f"{at}: expected no such field, got {short(actual)}"]
    if actual is ABSENT:
        return [f"{at}: missing (expected {spec})"]
    if kind == "any":
        return []
    if kind == "contains":
        return [] if isinstance(actual, str) and arg in actual else [f"{at}: expected text containing {arg!r}, got {short(actual)}"]
    if kind == "re":
        return [] if isinstance(actual, str) and re.search(arg, actual) else [f"{at}: expected text matching /{arg}/, got {short(actual)}"]
    if kind == "len":
        return [] if hasattr(actual, "__len__") and len(actual) == int(arg) else [f"{at}: expected length {arg}, got {short(actual)}"]
    if kind in ("min", "max"):
        try:
            number = float(actual)
        except (TypeError, ValueError):
            return [f"{at}: expected a number, got {short(actual)}"]
        ok = number >= float(arg) if kind == "min" else number <= float(arg)
        return [] if ok else [f"{at}: expected {'>=' if kind == 'min' else '<='} {arg}, got {actual!r}"]
    if kind == "type":
        types = {"int": int, "str": str, "list": list, "dict": dict, "bool": bool, "null": type(None)}
        return [] if type(actual) is types[arg] else [f"{at}: expected a {arg}, got {short(actual)}"]
    raise AssertionError(f"unknown matcher {spec!r} at {at}")


def short(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 400 else text[:400] + "…"


# ----- sending ---------------------------------------------------------------------------------


class Runner:
    """One started sandbox for a vendor, and the requests a case sends to it."""

    def __init__(self, vendor: str, seed: dict[str, Any], options: SandboxOptions, names: dict[str, Any]) -> None:
        self.vendor = vendor
        self.sandbox = Sandbox(seed, options=options).start()
        self.session = requests.Session()
        self.names = names
        self.background: list[threading.Thread] = []

    def close(self) -> None:
        for thread in self.background:
            thread.join(timeout=TIMEOUT)
        self.session.close()
        self.sandbox.stop()

    def url(self, path: str) -> str:
        if self.vendor == "mailchimp" and not path.startswith("/3.0"):
            return self.sandbox.mailchimp_base_url + path
        return self.sandbox.base_url + path

    def headers(self, step: dict[str, Any]) -> dict[str, str]:
        mode = step.get("auth", "bearer")
        secret = self.sandbox.mailchimp_api_key if self.vendor == "mailchimp" else self.sandbox.hubspot_token
        headers: dict[str, str] = {}
        if mode == "bearer":
            headers["Authorization"] = f"Bearer {secret}"
        elif mode == "basic":
            import base64
            headers["Authorization"] = "Basic " + base64.b64encode(f"anystring:{secret}".encode()).decode()
        elif mode == "wrong":
            headers["Authorization"] = "Bearer not-the-key-us1" if self.vendor == "mailchimp" else "Bearer pat-na1-wrong"
        for name, value in (resolve(step.get("headers") or {}, self.names)).items():
            headers[str(name)] = str(value)
        return headers

    def send(self, step: dict[str, Any], session: requests.Session | None = None) -> requests.Response:
        kwargs: dict[str, Any] = {"headers": self.headers(step), "timeout": TIMEOUT}
        if step.get("query") is not None:
            kwargs["params"] = resolve(step["query"], self.names)
        if "raw_body" in step:
            kwargs["data"] = str(step["raw_body"]).encode("utf-8")
        elif "body" in step:
            kwargs["data"] = json.dumps(resolve(step["body"], self.names)).encode("utf-8")
            kwargs["headers"].setdefault("Content-Type", "application/json")
        return (session or self.session).request(str(step["method"]).upper(), self.url(resolve(step["path"], self.names)),
                                                 **kwargs)

    def setup(self, case: Case) -> None:
        for index, step in enumerate(case.data.get("setup") or []):
            if step.get("background"):
                self._in_background(step)
                continue
            for _ in range(int(step.get("repeat", 1))):
                answer = self.send(step)
                if "status" in step and answer.status_code != step["status"]:
                    pytest.fail(f"{case.where()}\n  setup[{index}] {step['method']} {step['path']}: expected "
                                f"{step['status']}, got {answer.status_code}: {answer.text[:400]}", pytrace=False)
            for name, path in (step.get("save") or {}).items():
                try:
                    self.names[name] = dig(answer.json(), path)
                except (KeyError, IndexError, ValueError) as exc:
                    pytest.fail(f"{case.where()}\n  setup[{index}] save {name}: {exc}: {answer.text[:400]}", pytrace=False)

    def _in_background(self, step: dict[str, Any]) -> None:
        """Sends `step` (`repeat` times at once) from other threads and waits until the sandbox holds
        them open (Mailchimp's connection limit counts requests admitted and not yet answered)."""
        before, count = self.in_flight(), int(step.get("repeat", 1))

        def run() -> None:
            with requests.Session() as own:
                self.send(step, own)

        for _ in range(count):
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            self.background.append(thread)
        if self.vendor != "mailchimp":
            return
        deadline = time.monotonic() + TIMEOUT
        while self.in_flight() < before + count:
            if time.monotonic() > deadline or not any(t.is_alive() for t in self.background[-count:]):
                pytest.fail(f"only {self.in_flight() - before} of {count} background requests were held open at once; "
                            "give the case a larger `options: {latency_ms: ...}`", pytrace=False)
            time.sleep(0.002)

    def in_flight(self) -> int:
        api = self.sandbox.mailchimp_api
        return api.in_flight() if self.vendor == "mailchimp" and api is not None else 0


def options_of(*layers: dict[str, Any]) -> SandboxOptions:
    values: dict[str, Any] = {}
    variants: dict[str, Any] = {}
    for layer in layers:
        values.update(layer.get("options") or {})
        variants.update(layer.get("variants") or {})
    return SandboxOptions(**values, variants=variants)


def check(case: Case, answer: requests.Response, names: dict[str, Any]) -> None:
    expect = resolve(case.data["expect"], names)
    problems: list[str] = []
    if answer.status_code != expect["status"]:
        problems.append(f"status: expected {expect['status']}, got {answer.status_code}")
    if "body" in expect or expect.get("empty_body"):
        if expect.get("empty_body"):
            if answer.content:
                problems.append(f"body: expected none, got {answer.text[:200]!r}")
        else:
            try:
                body = answer.json()
            except ValueError:
                body = ABSENT
                problems.append(f"body: not JSON: {answer.text[:200]!r}")
            if body is not ABSENT:
                problems += mismatches(expect["body"], body)
    for name, value in (expect.get("headers") or {}).items():
        actual = answer.headers.get(name, ABSENT)
        problems += mismatches(value if isinstance(value, str) and value.startswith("~") else str(value), actual,
                               f"header {name}")
    if problems:
        request = case.data["request"]
        pytest.fail(f"{case.where()}\n  {request['method']} {request['path']} -> {answer.status_code}\n  "
                    + "\n  ".join(problems) + f"\n  answer: {answer.text[:600]}", pytrace=False)


# ----- the tests -------------------------------------------------------------------------------


class _Shared:
    """The one sandbox kept for the file being replayed (the next file's first case stops it)."""

    file: str | None = None
    runner: Runner | None = None

    @classmethod
    def for_file(cls, case: Case) -> Runner:
        if cls.file != case.file:
            cls.close()
            file_data = case.file_data
            cls.runner = Runner(case.vendor, file_data.get("seed") or {}, options_of(file_data),
                                dict(file_data.get("vars") or {}))
            cls.file = case.file
        assert cls.runner is not None
        return cls.runner

    @classmethod
    def close(cls) -> None:
        if cls.runner is not None:
            cls.runner.close()
        cls.file, cls.runner = None, None


@pytest.fixture(scope="module", autouse=True)
def _stop_shared() -> Iterator[None]:
    yield
    _Shared.close()


CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file[:-5]}::{c.name}" for c in CASES])
def test_case(case: Case) -> None:
    if case.own_sandbox:
        file_data = case.file_data
        seed = case.data["seed"] if "seed" in case.data else (file_data.get("seed") or {})
        runner = Runner(case.vendor, seed, options_of(file_data, case.data), dict(file_data.get("vars") or {}))
    else:
        runner = _Shared.for_file(case)
        runner.names = dict(case.file_data.get("vars") or {})  # saved values do not leak between cases
    try:
        runner.setup(case)
        answer = runner.send(case.data["request"])
        check(case, answer, runner.names)
    finally:
        if case.own_sandbox:
            runner.close()


@pytest.mark.parametrize("path", case_files(), ids=[p.name for p in case_files()])
def test_file_format(path: Path) -> None:
    problems = format_problems(path, load_file(path))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_enough_cases_per_vendor() -> None:
    counts = {vendor: sum(1 for c in CASES if c.vendor == vendor) for vendor in VENDORS}
    short_of = {v: (counts[v], n) for v, n in MIN_CASES.items() if counts[v] < n}
    assert not short_of, f"too few conformance cases (have, need): {short_of}"
    assert all(isinstance(c.data.get("source"), str) and c.data["source"].strip() for c in CASES)


# ----- the table of sandbox choices (README.md) --------------------------------------------------

NOT_VENDOR_CHOICES = {"fault_kinds", "slow_ms"}  # fault injection switches, not vendor behaviour
VARIANT_READ = re.compile(r"""variants\.get\(\s*["'](\w+)["']""")


def variants_read_by_sandbox() -> set[str]:
    found: set[str] = set()
    for path in SANDBOX_DIR.glob("*.py"):
        found |= set(VARIANT_READ.findall(path.read_text(encoding="utf-8")))
    return found - NOT_VENDOR_CHOICES


def sandbox_docstrings() -> str:
    import ast
    return "\n".join(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
                     for path in SANDBOX_DIR.glob("*.py"))


def choice_rows() -> list[list[str]]:
    text = (HERE / "README.md").read_text(encoding="utf-8")
    _, _, section = text.partition("## Sandbox choices where the sheets say [UNCONFIRMED]")
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()
            if re.match(r"^\|\s*[MH]\d+\s*\|", line)]
    assert rows, "README.md has no table of sandbox choices"
    return rows


def test_choice_table_names_real_cases_and_variants() -> None:
    by_file = {path.name: {c.get("name") for c in load_file(path).get("cases") or []} for path in case_files()}
    read = variants_read_by_sandbox()
    documented = sandbox_docstrings()
    problems: list[str] = []
    named_variants: set[str] = set()
    referenced: set[tuple[str, str]] = set()
    for row in choice_rows():
        label, cases, variant = row[0], row[3], row[4]
        current: str | None = None
        for found in re.finditer(r"`([\w.]+\.yaml)`|\"([^\"]+)\"", cases):
            if found.group(1):
                current = found.group(1)
                continue
            name = found.group(2)
            if current is None or current not in by_file:
                problems.append(f"{label}: case {name!r} names no existing file ({current})")
            elif name not in by_file[current]:
                problems.append(f"{label}: {current} has no case {name!r}")
            else:
                referenced.add((current, name))
        for name in re.findall(r"`(\w+)`", variant):
            named_variants.add(name)
            if name not in read:
                problems.append(f"{label}: variant {name} is not read by reconciler/sandbox (variants.get)")
            if name not in documented:
                problems.append(f"{label}: variant {name} is not named in a reconciler/sandbox docstring")
    for name in sorted(read - named_variants):
        problems.append(f"variant {name} is read by the sandbox but missing from the table in tests/conformance/README.md")
    tabled_files = {file for file, _ in referenced}
    for case in CASES:
        if case.file in tabled_files and case.name.startswith(("choice:", "variant:")) and (case.file, case.name) not in referenced:
            problems.append(f"{case.file}: {case.name!r} pins a choice but is not in the table")
    assert not problems, "\n".join(problems)


def test_cases_use_only_real_variants() -> None:
    """A misspelt variant would silently replay the default answer."""
    read = variants_read_by_sandbox() | NOT_VENDOR_CHOICES
    wrong = [f"{c.file} :: {c.name}: {name}" for c in CASES
             for name in list(c.file_data.get("variants") or {}) + list(c.data.get("variants") or {}) if name not in read]
    assert not wrong, "unknown variants:\n" + "\n".join(wrong)
