-- Every stored message moves its conversation's last_message_at. With that
-- column in the two activity indexes, each touch was a non-HOT update: a new
-- entry in all four of the table's indexes and a dead one left behind, at
-- the rate of the whole chat. Measured with the store_messages batch alone
-- (batches of 100, one writer, 1,000 busy conversations): 6.0-6.4 ms per
-- batch with the activity indexes, 3.9-4.5 ms without them.
--
-- Without them the touch changes no indexed column, and with room left on
-- each page it stays on its page (HOT): no index entries, and the old version
-- is pruned on the page without waiting for VACUUM. The conversation list
-- pays instead: it reads all of a member's conversations through the pair
-- index and the user_b index and sorts them for the page (0.65 ms for a
-- member with 3,000 conversations, against 0.14 ms from the activity
-- indexes), which is the right trade for a list opened far less often than
-- messages are sent.
DROP INDEX conversations_user_a_activity_idx;
DROP INDEX conversations_user_b_activity_idx;
-- The user_a side is served by the unique (user_a, user_b) index.
CREATE INDEX conversations_user_b_idx ON conversations (user_b);
-- Room on every page for the next versions of its rows. Applies to pages
-- written from now on; an existing table gets it as it is rewritten.
ALTER TABLE conversations SET (fillfactor = 50);
