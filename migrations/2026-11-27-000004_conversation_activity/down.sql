CREATE INDEX conversations_user_b_idx ON conversations (user_b);
DROP INDEX conversations_user_b_activity_idx;
DROP INDEX conversations_user_a_activity_idx;
