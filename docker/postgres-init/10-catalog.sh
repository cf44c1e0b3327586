#!/bin/sh
# The Iceberg catalog's own database and user, apart from Prefect's: run once by the postgres image on
# an empty volume.  The password comes from CATALOG_DB_PASSWORD; compose refuses to start without it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE curate LOGIN PASSWORD '${CATALOG_DB_PASSWORD}';
CREATE DATABASE catalog OWNER curate;
SQL
