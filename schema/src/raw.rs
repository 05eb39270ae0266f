//! Hand-written SQL that diesel-async still prepares once per connection
//! and caches. `diesel::sql_query` marks every statement as not cacheable,
//! so a hot path through it is parsed and planned on every call; this type
//! carries the same fixed text with typed binds and no such mark.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Untyped};

/// One bind parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Int8(i64),
    Int8s(&'a [i64]),
    Texts(&'a [&'a str]),
    OptionalTexts(&'a [Option<&'a str>]),
}

/// `parts[0] bind[0] parts[1] bind[1] ... parts[n]`: one more part than binds.
#[derive(Debug, Clone)]
pub(crate) struct RawSql<'a> {
    parts: &'static [&'static str],
    binds: Vec<Bind<'a>>,
}

impl<'a> RawSql<'a> {
    pub(crate) fn new(parts: &'static [&'static str], binds: Vec<Bind<'a>>) -> Self {
        debug_assert_eq!(parts.len(), binds.len() + 1, "one more SQL part than binds");
        Self { parts, binds }
    }
}

impl QueryId for RawSql<'_> {
    type QueryId = ();
    // The statement cache keys on the SQL text, which is fixed per call site.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for RawSql<'_> {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for RawSql<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for (index, part) in self.parts.iter().enumerate() {
            out.push_sql(part);
            match self.binds.get(index) {
                None => {}
                Some(Bind::Int8(value)) => out.push_bind_param::<BigInt, _>(value)?,
                Some(Bind::Int8s(values)) => out.push_bind_param::<Array<BigInt>, _>(*values)?,
                Some(Bind::Texts(values)) => out.push_bind_param::<Array<Text>, _>(*values)?,
                Some(Bind::OptionalTexts(values)) => {
                    out.push_bind_param::<Array<Nullable<Text>>, _>(*values)?;
                }
            }
        }
        Ok(())
    }
}
