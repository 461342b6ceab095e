"""The market-data simulator: a feed-handler model, its ``md_*`` metrics and an admin API.

Run it with ``python -m sim --port N``; start it from Python with :func:`sim.process.run_sim`.
"""
