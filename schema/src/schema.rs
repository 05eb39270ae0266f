// @generated automatically by Diesel CLI.

diesel::table! {
    audit_logs (id) {
        id -> Int8,
        actor_id -> Int8,
        action -> Text,
        target_type -> Text,
        target_id -> Int8,
        details -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    conversation_reads (conversation_id, user_id) {
        conversation_id -> Int8,
        user_id -> Int8,
        last_read_message_id -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    conversations (id) {
        id -> Int8,
        user_a -> Int8,
        user_b -> Int8,
        created_at -> Timestamptz,
        last_message_at -> Nullable<Timestamptz>,
        last_message_id -> Nullable<Int8>,
    }
}

diesel::table! {
    messages (id) {
        id -> Int8,
        conversation_id -> Int8,
        sender_id -> Int8,
        body -> Text,
        client_id -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    profiles (id) {
        id -> Int8,
        display_name -> Text,
        gender -> Text,
        date_of_birth -> Date,
        religion -> Text,
        city -> Text,
        occupation -> Nullable<Text>,
        bio -> Text,
        verification_status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        last_active_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Int8,
        user_id -> Int8,
        node_id -> Text,
        socket_id -> Text,
        connected_at -> Timestamptz,
        disconnected_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(conversation_reads -> conversations (conversation_id));
diesel::joinable!(conversation_reads -> profiles (user_id));
diesel::joinable!(messages -> conversations (conversation_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_logs,
    conversation_reads,
    conversations,
    messages,
    profiles,
    sessions,
);
