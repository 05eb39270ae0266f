DROP FUNCTION store_messages(BIGINT[], BIGINT[], TEXT[], TEXT[]);
