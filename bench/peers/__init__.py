"""Scripts the harness runs, one subprocess per measurement, each with the
interpreter of the system it measures. They import only the standard
library and their own system's packages (plus ``_common``), print progress
on stderr and one ``BENCH-RESULT {json}`` line on stdout."""
