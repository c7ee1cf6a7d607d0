#!/bin/bash
# Same accounts as scripts/stack: read-only export, write gate, schema admin, demo application writer,
# binlog reader of the online mode (replication + SELECT only).
set -euo pipefail
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
CREATE DATABASE IF NOT EXISTS billing CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'bm_export'@'%' IDENTIFIED BY '${BM_MYSQL_EXPORT_PASSWORD}';
CREATE USER IF NOT EXISTS 'bm_gate'@'%' IDENTIFIED BY '${BM_MYSQL_GATE_PASSWORD}';
CREATE USER IF NOT EXISTS 'bm_admin'@'%' IDENTIFIED BY '${BM_MYSQL_ADMIN_PASSWORD}';
CREATE USER IF NOT EXISTS 'bm_app'@'%' IDENTIFIED BY '${BM_MYSQL_APP_PASSWORD}';
CREATE USER IF NOT EXISTS 'bm_cdc'@'%' IDENTIFIED BY '${BM_MYSQL_CDC_PASSWORD}';
GRANT SELECT, SHOW VIEW ON \`billing%\`.* TO 'bm_export'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER, CREATE, DROP, ALTER, LOCK TABLES ON \`billing%\`.* TO 'bm_gate'@'%';
GRANT PROCESS, CONNECTION_ADMIN ON *.* TO 'bm_gate'@'%';
GRANT ALL PRIVILEGES ON \`billing%\`.* TO 'bm_admin'@'%';
GRANT PROCESS ON *.* TO 'bm_admin'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`billing%\`.* TO 'bm_app'@'%';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'bm_cdc'@'%';
GRANT SELECT ON \`billing%\`.* TO 'bm_cdc'@'%';
FLUSH PRIVILEGES;
SQL
