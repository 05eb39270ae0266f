//! `/api/v1/admin`: actions that need the admin role.

mod verify_profile;

pub use verify_profile::verify_profile;
