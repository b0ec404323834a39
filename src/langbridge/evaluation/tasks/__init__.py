"""Built-in benchmarks; importing this package registers them (one module per benchmark family)."""

from . import bbh, flores, humaneval, mgsm, xcopa  # noqa: F401
