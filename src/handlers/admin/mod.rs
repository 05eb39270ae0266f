//! `/api/v1/admin`: actions that need the admin role.

pub(crate) mod verify_profile;

pub use verify_profile::verify_profile;
