//! The plans the code really gets: the queries run through diesel-async,
//! which prepares and caches them, more than five times (after which
//! PostgreSQL may switch a prepared statement to its generic plan); then the
//! cached statement itself is EXPLAINed, under both the default plan cache
//! mode and a forced generic plan.

use aurum_schema::ids::UserId;
use aurum_schema::models::profiles::{self, Gender, ScrollFilter, ScrollKey};
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::helpers::TestApp;
use crate::helpers::plans::{CachedStatement, cached_statement};

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

async fn explain(
    conn: &mut AsyncPgConnection,
    statement: &CachedStatement,
    args: &[&str],
    generic: bool,
) -> String {
    assert_eq!(
        statement.params as usize,
        args.len(),
        "the statement's parameters changed; update the test"
    );
    let mode = if generic { "force_generic_plan" } else { "auto" };
    diesel::sql_query(format!("SET plan_cache_mode = {mode}"))
        .execute(conn)
        .await
        .unwrap();
    let sql = format!("EXPLAIN EXECUTE {}({})", statement.name, args.join(", "));
    let lines: Vec<PlanLine> = diesel::sql_query(sql).load(conn).await.unwrap();
    diesel::sql_query("RESET plan_cache_mode")
        .execute(conn)
        .await
        .unwrap();
    lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n")
}

fn assert_uses(plan: &str, index: &str, what: &str) {
    assert!(plan.contains(index), "{what}: expected {index}, got:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "{what}: sequential scan:\n{plan}");
    assert!(
        !plan.contains("Sort"),
        "{what}: explicit sort (index order not used):\n{plan}"
    );
}

#[actix_rt::test]
async fn scroll_and_batch_plans_use_their_indexes() {
    let app = TestApp::spawn().await;
    for batch in 0..4 {
        app.seed(1 + batch * 10_000, 10_000, batch as u64).await;
    }
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    diesel::sql_query("ANALYZE profiles")
        .execute(&mut conn)
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let viewer = UserId(1_000_000);
    let key = ScrollKey {
        created_at_us: chrono::Utc::now().timestamp_micros(),
        id: i64::MAX,
    };

    // Gender + age range, on a page after the first (the cursor condition).
    let filter = ScrollFilter {
        gender: Some(Gender::Female),
        min_age: Some(25),
        max_age: Some(35),
        ..Default::default()
    };
    for _ in 0..8 {
        let page = profiles::scroll(&mut conn, viewer, &filter, Some(key), 21, today)
            .await
            .unwrap();
        assert_eq!(page.len(), 21);
    }
    let stmt = cached_statement(
        &mut conn,
        &[
            "\"gender\" = $",
            "date_of_birth\" <= $",
            "(\"profiles\".\"created_at\", \"profiles\".\"id\") <",
        ],
        &[],
    )
    .await;
    let args = [
        "1000000",
        "'female'",
        "'2001-01-01'",
        "'1990-01-01'",
        "now()",
        "9223372036854775807",
        "21",
    ];
    for generic in [false, true] {
        let plan = explain(&mut conn, &stmt, &args, generic).await;
        assert_uses(
            &plan,
            "profiles_scroll_gender_idx",
            &format!("gender scroll, generic={generic}"),
        );
    }

    // No filter at all.
    let none = ScrollFilter::default();
    for _ in 0..8 {
        profiles::scroll(&mut conn, viewer, &none, None, 21, today)
            .await
            .unwrap();
    }
    let stmt = cached_statement(&mut conn, &["!= $1)) ORDER BY"], &[]).await;
    for generic in [false, true] {
        let plan = explain(&mut conn, &stmt, &["1000000", "21"], generic).await;
        assert_uses(
            &plan,
            "profiles_scroll_idx",
            &format!("unfiltered scroll, generic={generic}"),
        );
    }

    // City filter.
    let city = ScrollFilter {
        city: Some("Pune".to_owned()),
        ..Default::default()
    };
    for _ in 0..8 {
        profiles::scroll(&mut conn, viewer, &city, None, 21, today)
            .await
            .unwrap();
    }
    let stmt = cached_statement(&mut conn, &["\"city\" = $2)) ORDER BY"], &[]).await;
    for generic in [false, true] {
        let plan = explain(&mut conn, &stmt, &["1000000", "'Pune'", "21"], generic).await;
        assert_uses(
            &plan,
            "profiles_scroll_city_idx",
            &format!("city scroll, generic={generic}"),
        );
    }

    // Batch: one statement, whatever the number of ids.
    let ids: Vec<i64> = (1..=50).collect();
    for n in [50, 3, 17, 50, 8, 1, 50] {
        profiles::load_approved(&mut conn, &ids[..n]).await.unwrap();
    }
    let stmt = cached_statement(&mut conn, &["= ANY($1)"], &[]).await;
    for generic in [false, true] {
        let plan = explain(&mut conn, &stmt, &["ARRAY[1,2,3]::int8[]"], generic).await;
        assert!(
            plan.contains("profiles_pkey"),
            "batch, generic={generic}:\n{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "batch, generic={generic}:\n{plan}");
    }
}
