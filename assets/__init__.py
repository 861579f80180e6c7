"""The assets of tracehouse, one module per stage.

Daily models and the migration use ``backfill_policy`` on purpose (a backfill of many days runs as one
blue/green build; one migration part per run). Dagster marks that parameter beta and warns at every import
of the code location, which is every run process: hundreds of identical lines in a dev log. That one warning
is silenced here; any other still shows.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` of function", category=dg.BetaWarning)
