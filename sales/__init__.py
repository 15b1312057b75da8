"""The sale's rules: checkout, settling payments, refunds, check-in, and who
may see or manage what. Entry points (the API's routers, and any process that
settles payments) call these functions with their dependencies; the functions
decide and raise :class:`sales.errors.SaleRefused` with a stable code when the
answer is no. Nothing here knows HTTP.
"""
