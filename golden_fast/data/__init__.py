"""Edit data: the `EditRequest` every other module consumes, loaders for the public
benchmarks (CounterFact, zsRE, KnowEdit, known_1000), sampling/splitting, and a small
built-in fact set for demos and tests."""

from golden_fast.data.builtin import builtin_facts, builtin_records
from golden_fast.data.loaders import (
    FORMATS,
    describe_file,
    detect_format,
    from_records,
    load,
    read_records,
    resolve_format,
    sample,
    split,
    validate,
    validate_records,
)
from golden_fast.data.request import EditRequest, EditRequestError, Probe

__all__ = [
    "FORMATS",
    "EditRequest",
    "EditRequestError",
    "Probe",
    "builtin_facts",
    "builtin_records",
    "describe_file",
    "detect_format",
    "from_records",
    "load",
    "read_records",
    "resolve_format",
    "sample",
    "split",
    "validate",
    "validate_records",
]
