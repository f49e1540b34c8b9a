"""The functions the tests run, built before the test session: `python -m tests.prebuild` (`make functions`).

A build takes tens of seconds, minutes on a busy machine. Done here, it runs once, side by side,
with a line per function, and not under pytest's per-test timeout; the session fixture
`built_functions` then finds every function in the tests' cache. Under `make test` (which sets
PREBUILT_ENV) a function missing from that cache fails the fixture rather than being built there.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from host.cli.progress import build_functions, default_jobs
from host.config import PROJECT_ROOT, Settings, load_settings
from host.errors import WardfnError

# Keys and compiled artifacts persist across test runs (the cache key decides what is stale).
TEST_HOME = PROJECT_ROOT / ".wardfn" / "test-home"
FUNCTION_DIRS = [PROJECT_ROOT / "functions", PROJECT_ROOT / "tests" / "functions"]
PREBUILT_ENV = "WARDFN_TEST_FUNCTIONS_PREBUILT"


def build_settings() -> Settings:
    """The settings the tests build and look up functions with."""
    return load_settings(home=TEST_HOME, functions_dirs=FUNCTION_DIRS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.prebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="builds at once (default: %(default)s)")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        build_functions(build_settings(), [], force=False, console=console, jobs=max(1, args.jobs))
    except WardfnError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
