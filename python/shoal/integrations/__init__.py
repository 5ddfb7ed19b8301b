"""shoal under the libraries people already use: joblib (and so
scikit-learn's ``n_jobs``), dask, asyncio. Executors live in
``shoal.pool.executor``; what a library needs beyond an executor is here,
one module per library. None of them is imported with shoal."""
