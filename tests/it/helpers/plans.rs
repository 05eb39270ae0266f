//! The statements diesel-async really prepared and cached on a connection,
//! so plan tests EXPLAIN what the code runs, not a hand-written copy.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, QueryableByName)]
pub struct CachedStatement {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = BigInt)]
    pub params: i64,
    #[diesel(sql_type = Text)]
    pub statement: String,
}

/// The one cached statement whose text has every one of `needles` and none
/// of `absent`; fails the test when there is not exactly one.
pub async fn cached_statement(
    conn: &mut AsyncPgConnection,
    needles: &[&str],
    absent: &[&str],
) -> CachedStatement {
    let all: Vec<CachedStatement> = diesel::sql_query(
        "SELECT name::text, cardinality(parameter_types)::int8 AS params, statement::text AS statement \
         FROM pg_prepared_statements WHERE NOT from_sql",
    )
    .load(conn)
    .await
    .unwrap();
    let texts: Vec<String> = all.iter().map(|p| p.statement.clone()).collect();
    let mut found: Vec<CachedStatement> = all
        .into_iter()
        .filter(|p| needles.iter().all(|n| p.statement.contains(n)))
        .filter(|p| !absent.iter().any(|n| p.statement.contains(n)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one cached statement with {needles:?} among {texts:#?}"
    );
    found.remove(0)
}
