"""digits: the library under the pipeline. Plain Python a notebook or a serving process
can import without Prefect; each module imports only what its stage needs."""
