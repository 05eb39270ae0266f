//! `/api/v1/profiles` and `/api/v1/matching/profiles`.

pub(crate) mod batch;
pub(crate) mod get;
pub(crate) mod get_own;
mod presence;
pub(crate) mod put_own;
pub(crate) mod scroll;

pub use batch::batch_profiles;
pub use get::get_profile;
pub use get_own::get_own_profile;
pub use put_own::put_own_profile;
pub use scroll::{ScrollCursor, scroll_profiles};
