-- Run once by the postgres image, on the first start with an empty data volume
-- (/docker-entrypoint-initdb.d). POSTGRES_USER=hookbus already exists; each SQL-backed service
-- gets its own database and creates its tables in it at start-up.
CREATE DATABASE inventory OWNER hookbus;
CREATE DATABASE notifications OWNER hookbus;
CREATE DATABASE analytics OWNER hookbus;
