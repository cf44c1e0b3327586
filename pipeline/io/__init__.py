"""Reading inputs as Ray Data: Common Voice releases (tarballs, folders, their TSVs and views), Parquet
mirrors and their schemas, and the sink that writes a run's rows as the tables' data files.  The commit is
``pipeline/table``'s; storage is ``pipeline/runtime/storage.py``'s."""
