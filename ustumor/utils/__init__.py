"""Helpers shared across ustumor's packages: file writing and caches (:mod:`.file_io`), ratios
and number formatting (:mod:`.numbers`), and the shims of moved modules (:mod:`.deprecation`)."""
