"""The on-sale load scenarios behind ``locust/locustfile.py``.

``options`` (command line, and where the target's secrets are found),
``organizer`` (the event each run creates, the accounts), ``person`` (what a
simulated person can do), ``crowd`` (who is in each scenario and what they
do), ``tally`` (outcomes Locust's request stats do not hold), ``verdict`` (the
pass criteria), ``pgcheck`` (the oversell check against Postgres, also
runnable on its own) and ``baseline_server`` (the seed-style Postgres hold
endpoint, for comparison).
"""
