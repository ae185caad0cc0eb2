"""The engine: jobs in units, run on a Dask grid, stored atomically, rendered by papermill.

It knows nothing of attacks, models or the study's records: a :class:`~segattack.engine.jobs.Job`
says what its units are, and the engine runs any job this way.
"""
