ALTER TABLE conversation_reads RESET (autovacuum_vacuum_scale_factor);
ALTER TABLE conversations RESET (autovacuum_vacuum_scale_factor);
ALTER TABLE messages RESET (
    autovacuum_vacuum_insert_scale_factor,
    autovacuum_vacuum_insert_threshold,
    autovacuum_analyze_scale_factor
);
