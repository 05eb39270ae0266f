ALTER TABLE conversations RESET (fillfactor);
DROP INDEX conversations_user_b_idx;
CREATE INDEX conversations_user_a_activity_idx
    ON conversations (user_a, last_message_at DESC, id DESC);
CREATE INDEX conversations_user_b_activity_idx
    ON conversations (user_b, last_message_at DESC, id DESC);
