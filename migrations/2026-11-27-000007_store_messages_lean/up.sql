-- store_messages, leaner (same contract and ordering as 000005), and
-- messages.sender_id without its foreign key. Measured side by side with
-- pgbench on the function alone (batches of 100, one writer, 1,000 busy
-- conversations, after 000006):
--   * profiles looked up only for pairs without a conversation, and the
--     conversation found once instead of twice: 4.0-4.4 ms -> 3.6-4.1 ms;
--   * without the sender's foreign key: 4.1-4.3 ms -> 3.5-3.6 ms. Its check
--     took a FOR KEY SHARE lock on the sender's profile row for every
--     message: a WAL record and a dirtied profile page each time.
-- The key is implied: store_messages, the only writer of messages, puts a
-- message in the conversation of its sender and recipient, so the sender is
-- always one of that conversation's members, and conversations keeps its
-- foreign keys to both (a profile in a conversation cannot be deleted).
-- tests/it/messages.rs checks that invariant over stored messages.
ALTER TABLE messages DROP CONSTRAINT messages_sender_id_fkey;

CREATE OR REPLACE FUNCTION store_messages(senders BIGINT[], recipients BIGINT[], bodies TEXT[], client_ids TEXT[])
RETURNS TABLE (ord BIGINT, outcome TEXT, id BIGINT, conversation_id BIGINT, sender_id BIGINT,
               recipient_id BIGINT, body TEXT, created_at TIMESTAMPTZ, client_id TEXT)
LANGUAGE plpgsql
-- Every row this function touches is reached through an index: the plans
-- are made once per connection, and a plan made while a table was small
-- (a sequential scan of `messages` or `conversations`) would cost time in
-- proportion to the table for the life of the connection.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    -- Any value: it only has to differ from other advisory locks in the schema.
    message_order_lock CONSTANT BIGINT := 7022645042625867123; -- "aurum_ms"
    stamp TIMESTAMPTZ;
    result RECORD;
BEGIN
    -- Missing conversations, before the lock. A pair another writer is
    -- inserting makes this wait for it to finish, then skip the pair; the
    -- insert below runs with a later snapshot and finds it either way. The
    -- profiles are looked up only for pairs without a conversation: an
    -- existing one proves both members exist (its foreign keys).
    INSERT INTO conversations (user_a, user_b)
    SELECT DISTINCT LEAST(t.s, t.r), GREATEST(t.s, t.r)
    FROM unnest(senders, recipients) AS t(s, r)
    WHERE CASE WHEN EXISTS (SELECT 1 FROM conversations c
                            WHERE c.user_a = LEAST(t.s, t.r) AND c.user_b = GREATEST(t.s, t.r))
               THEN false
               ELSE EXISTS (SELECT 1 FROM profiles p WHERE p.id = t.s)
                    AND EXISTS (SELECT 1 FROM profiles p WHERE p.id = t.r) END
    ORDER BY 1, 2
    ON CONFLICT (user_a, user_b) DO NOTHING;

    PERFORM pg_advisory_xact_lock(message_order_lock);
    -- After the lock, so time follows id order across batches too.
    stamp := clock_timestamp();

    -- Everything committed before the lock is in this statement's snapshot,
    -- including any earlier message a retry repeats. Written so that every
    -- join is an index lookup or one pass: a batch is up to 512 messages,
    -- and the generic plan knows nothing of that.
    FOR result IN
    WITH input AS (
        SELECT v.*,
               -- The first valid copy of a (sender, client_id) in the batch is
               -- stored; later copies answer with it.
               row_number() OVER (PARTITION BY v.s, v.k, v.valid ORDER BY v.ord) AS copy
        -- A message is valid when its pair has a conversation: the insert
        -- above made one for every pair whose members both exist. Only a
        -- message without one looks up which member is unknown.
        FROM (SELECT t.ord, t.s, t.r, t.b, t.k, c.id AS conversation_id,
                     c.id IS NOT NULL OR EXISTS (SELECT 1 FROM profiles p WHERE p.id = t.s) AS sender_known,
                     c.id IS NOT NULL OR EXISTS (SELECT 1 FROM profiles p WHERE p.id = t.r) AS recipient_known,
                     c.id IS NOT NULL AS valid,
                     e.id AS e_id, e.conversation_id AS e_conversation_id, e.body AS e_body,
                     e.created_at AS e_created_at,
                     CASE WHEN ec.user_a = e.sender_id THEN ec.user_b ELSE ec.user_a END AS e_recipient
              FROM unnest(senders, recipients, bodies, client_ids) WITH ORDINALITY AS t(s, r, b, k, ord)
              LEFT JOIN conversations c ON c.user_a = LEAST(t.s, t.r) AND c.user_b = GREATEST(t.s, t.r)
              LEFT JOIN messages e ON e.sender_id = t.s AND e.client_id = t.k
              LEFT JOIN conversations ec ON ec.id = e.conversation_id) v
    ),
    -- Ids in input order: the fence (OFFSET 0) keeps the sort below the
    -- projection that calls nextval.
    fresh AS (
        SELECT nextval('messages_id_seq') AS id, f.*
        FROM (SELECT i.ord, i.s, i.r, i.b, i.k, i.conversation_id
              FROM input i
              WHERE i.valid AND i.e_id IS NULL AND (i.k IS NULL OR i.copy = 1)
              ORDER BY i.ord OFFSET 0) f
    ),
    -- Runs to completion though nothing reads it; a failure fails the batch.
    inserted AS (
        INSERT INTO messages (id, conversation_id, sender_id, body, client_id, created_at)
        SELECT f.id, f.conversation_id, f.s, f.b, f.k, stamp FROM fresh f
    ),
    touched AS (
        UPDATE conversations c SET last_message_id = n.id, last_message_at = stamp
        FROM (SELECT f.conversation_id, max(f.id) AS id FROM fresh f GROUP BY f.conversation_id) n
        WHERE c.id = n.conversation_id AND (c.last_message_id IS NULL OR c.last_message_id < n.id)
    )
    SELECT f.ord, 'new' AS outcome, f.id, f.conversation_id, f.s AS sender_id, f.r AS recipient_id,
           f.b AS body, stamp AS created_at, f.k AS client_id
    FROM fresh f
    UNION ALL
    SELECT i.ord,
           CASE WHEN NOT i.sender_known THEN 'unknown_sender'
                WHEN NOT i.recipient_known THEN 'unknown_recipient'
                ELSE 'duplicate' END,
           COALESCE(i.e_id, first.id), COALESCE(i.e_conversation_id, first.conversation_id),
           CASE WHEN i.valid THEN i.s END, COALESCE(i.e_recipient, first.r),
           COALESCE(i.e_body, first.b), CASE WHEN i.e_id IS NOT NULL THEN i.e_created_at
                                             WHEN first.id IS NOT NULL THEN stamp END,
           CASE WHEN i.valid THEN i.k END
    FROM input i
    LEFT JOIN fresh first ON i.valid AND i.e_id IS NULL AND first.s = i.s AND first.k = i.k
    WHERE NOT (i.valid AND i.e_id IS NULL AND (i.k IS NULL OR i.copy = 1))
    ORDER BY 1
    LOOP
        -- Every message is stored or found; if one were neither, the whole
        -- batch fails rather than commit the rest beside an unexplained gap.
        IF result.outcome IN ('new', 'duplicate') AND result.id IS NULL THEN
            RAISE EXCEPTION 'store_messages: message % of the batch was neither stored nor found', result.ord;
        END IF;
        ord := result.ord;
        outcome := result.outcome;
        id := result.id;
        conversation_id := result.conversation_id;
        sender_id := result.sender_id;
        recipient_id := result.recipient_id;
        body := result.body;
        created_at := result.created_at;
        client_id := result.client_id;
        RETURN NEXT;
    END LOOP;
END
$$;
