-- The conversation list walks one member's conversations newest activity
-- first. A member is user_a in some pairs and user_b in others, so each side
-- gets an index that starts at the member and is already in list order: the
-- query reads one page from each and merges them, whatever the member's
-- number of conversations.
CREATE INDEX conversations_user_a_activity_idx
    ON conversations (user_a, last_message_at DESC, id DESC);
CREATE INDEX conversations_user_b_activity_idx
    ON conversations (user_b, last_message_at DESC, id DESC);
-- The user_b activity index leads with user_b, so it also serves that
-- foreign key; the plain one would only cost writes.
DROP INDEX conversations_user_b_idx;
