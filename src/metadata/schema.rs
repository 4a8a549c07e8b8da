// Tables shared by the Postgres and SQLite migrations (see diesel.toml).

diesel::table! {
    files (id) {
        id -> Text,
        tenant_id -> Text,
        device_id -> Nullable<Text>,
        name -> Text,
        size -> BigInt,
        sha256 -> Text,
        content_type -> Text,
        metadata -> Text,
        status -> Text,
        backend -> Text,
        object_key -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        uploaded_at -> Nullable<Timestamp>,
        upload_expires_at -> Timestamp,
        reconcile_after -> Nullable<Timestamp>,
        part_size -> Nullable<BigInt>,
        multipart_upload_id -> Nullable<Text>,
        sweep_after -> Nullable<Timestamp>,
        batch_id -> Nullable<Text>,
        replicas -> Nullable<Text>,
    }
}

diesel::table! {
    file_parts (file_id, number) {
        file_id -> Text,
        number -> Integer,
        sha256 -> Text,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        event_id -> Text,
        event_type -> Text,
        file_id -> Text,
        tenant_id -> Text,
        device_id -> Nullable<Text>,
        payload -> Text,
        created_at -> Timestamp,
        published_at -> Nullable<Timestamp>,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        claimed_until -> Nullable<Timestamp>,
        after_key -> Nullable<Text>,
    }
}

diesel::table! {
    usage_counters (tenant_id, device_id, shard) {
        tenant_id -> Text,
        device_id -> Text,
        shard -> SmallInt,
        bytes_used -> BigInt,
        files_used -> BigInt,
        bytes_reserved -> BigInt,
        files_reserved -> BigInt,
    }
}

diesel::table! {
    cache_invalidations (id) {
        id -> Integer,
        requested -> BigInt,
    }
}

diesel::table! {
    inboxes (tenant_id, device_id) {
        tenant_id -> Text,
        device_id -> Text,
        accept_from -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    transfers (id) {
        id -> Text,
        tenant_id -> Text,
        file_id -> Text,
        sender_device -> Nullable<Text>,
        sender_service -> Nullable<Text>,
        state -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    transfer_recipients (transfer_id, device_id) {
        transfer_id -> Text,
        tenant_id -> Text,
        device_id -> Text,
        state -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    batches (id) {
        id -> Text,
        tenant_id -> Text,
        device_id -> Nullable<Text>,
        created_by -> Text,
        name -> Nullable<Text>,
        metadata -> Text,
        state -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        committed_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    jobs (id) {
        id -> Text,
        tenant_id -> Text,
        group_id -> Nullable<Text>,
        kind -> Text,
        file_id -> Text,
        source_backend -> Text,
        target_backend -> Text,
        object_key -> Text,
        state -> Text,
        bytes_total -> BigInt,
        bytes_done -> BigInt,
        attempts -> Integer,
        error -> Nullable<Text>,
        cancel_requested -> Bool,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        run_after -> Timestamp,
        source_delete_after -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    job_log (id) {
        id -> BigInt,
        job_id -> Text,
        at -> Timestamp,
        line -> Text,
    }
}

diesel::joinable!(transfer_recipients -> transfers (transfer_id));
diesel::joinable!(transfers -> files (file_id));

diesel::allow_tables_to_appear_in_same_query!(
    files,
    outbox,
    file_parts,
    usage_counters,
    transfers,
    transfer_recipients,
    inboxes,
    batches,
    jobs,
    job_log
);
