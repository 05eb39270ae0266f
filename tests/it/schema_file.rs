//! `schema/src/schema.rs` is what `diesel print-schema` writes for the
//! migrated database. diesel_cli is not a build dependency (CI reaches only
//! package registries), so the test renders the same file from the
//! migrated test database's catalog, the way print-schema does, and
//! compares the text: a migration that changes a table, a column's type or
//! nullability, a primary key or a foreign key, without schema.rs being
//! regenerated, fails here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::helpers::db::TestDb;

/// diesel's name for a PostgreSQL type (`pg_type.typname`); a type not
/// listed fails the test, so a new one is mapped on purpose, not guessed.
fn diesel_type(udt: &str) -> &'static str {
    match udt {
        "int2" => "Int2",
        "int4" => "Int4",
        "int8" => "Int8",
        "text" => "Text",
        "varchar" => "Varchar",
        "bool" => "Bool",
        "float4" => "Float4",
        "float8" => "Float8",
        "numeric" => "Numeric",
        "date" => "Date",
        "timestamp" => "Timestamp",
        "timestamptz" => "Timestamptz",
        "json" => "Json",
        "jsonb" => "Jsonb",
        "uuid" => "Uuid",
        "bytea" => "Bytea",
        other => panic!("no diesel type mapped for PostgreSQL type {other:?}: add it here"),
    }
}

/// The file print-schema writes for the database at `client`.
async fn render(client: &tokio_postgres::Client) -> String {
    let columns = client
        .query(
            "SELECT c.table_name::text, c.column_name::text, c.udt_name::text, c.is_nullable = 'YES'
             FROM information_schema.columns c
             JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
               AND c.table_name NOT LIKE '\\_\\_diesel%'
             ORDER BY c.table_name, c.ordinal_position",
            &[],
        )
        .await
        .unwrap();
    let keys = client
        .query(
            "SELECT k.table_name::text, k.column_name::text
             FROM information_schema.table_constraints tc
             JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
             WHERE tc.table_schema = 'public' AND tc.constraint_type = 'PRIMARY KEY'
             ORDER BY k.table_name, k.ordinal_position",
            &[],
        )
        .await
        .unwrap();
    // Single-column foreign keys, as print-schema reads them: the child's
    // column and the parent table.
    let foreign = client
        .query(
            "SELECT child.relname::text, a.attname::text, parent.relname::text
             FROM pg_constraint con
             JOIN pg_class child ON child.oid = con.conrelid
             JOIN pg_class parent ON parent.oid = con.confrelid
             JOIN pg_namespace n ON n.oid = child.relnamespace
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
             WHERE con.contype = 'f' AND n.nspname = 'public' AND cardinality(con.conkey) = 1
             ORDER BY 1, 3, 2",
            &[],
        )
        .await
        .unwrap();

    let mut tables: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for row in &columns {
        tables
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2), row.get(3)));
    }
    let mut primary: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &keys {
        primary.entry(row.get(0)).or_default().push(row.get(1));
    }

    let mut out = String::from("// @generated automatically by Diesel CLI.\n");
    for (table, columns) in &tables {
        let key = primary
            .get(table)
            .unwrap_or_else(|| panic!("table {table} has no primary key: diesel needs one"));
        writeln!(out, "\ndiesel::table! {{\n    {table} ({}) {{", key.join(", ")).unwrap();
        for (name, udt, nullable) in columns {
            let ty = diesel_type(udt);
            let ty = if *nullable {
                format!("Nullable<{ty}>")
            } else {
                ty.to_owned()
            };
            writeln!(out, "        {name} -> {ty},").unwrap();
        }
        out.push_str("    }\n}\n");
    }
    // print-schema writes a join only where the child has exactly one
    // foreign key to the parent: with two (conversations.user_a/user_b)
    // diesel cannot tell which one a join means.
    let mut joins: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for row in &foreign {
        joins
            .entry((row.get(0), row.get(2)))
            .or_default()
            .push(row.get(1));
    }
    let joins: Vec<String> = joins
        .into_iter()
        .filter(|(_, columns)| columns.len() == 1)
        .map(|((child, parent), columns)| {
            format!("diesel::joinable!({child} -> {parent} ({}));\n", columns[0])
        })
        .collect();
    if !joins.is_empty() {
        out.push('\n');
        out.extend(joins);
    }
    out.push_str("\ndiesel::allow_tables_to_appear_in_same_query!(\n");
    for table in tables.keys() {
        writeln!(out, "    {table},").unwrap();
    }
    out.push_str(");\n");
    out
}

#[actix_rt::test]
async fn schema_rs_matches_the_migrated_database() {
    let db = TestDb::migrated();
    let client = db.client().await;
    let rendered = render(&client).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/src/schema.rs");
    let file = std::fs::read_to_string(path).unwrap();
    // The render is only as good as its reading of the catalog: it must
    // find what the migrations are known to hold.
    assert!(
        rendered.contains("messages (id) {")
            && rendered.contains("diesel::joinable!(messages -> conversations"),
        "{rendered}"
    );
    assert!(
        file == rendered,
        "schema/src/schema.rs differs from the migrated database; it should read:\n{rendered}"
    );
}
