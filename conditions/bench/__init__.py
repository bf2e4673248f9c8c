"""The benchmark behind `manage.py bench`: generated users, alerts and candles,
shared evaluation against one evaluation per alert, the 100,000-alert cycle,
and the pipeline end to end.

`scenario`, `market`, `per_alert` and `engine_cycle` import no Django, so the
engine tests can exercise them; the modules that write to a database or start
workers do.
"""
