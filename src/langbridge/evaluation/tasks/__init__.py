"""Built-in benchmarks; importing this package registers them (one module per benchmark family)."""

from . import bbh, humaneval, mgsm, xcopa  # noqa: F401
