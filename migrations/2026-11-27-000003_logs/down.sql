DROP TABLE sessions;
DROP TABLE audit_logs;
