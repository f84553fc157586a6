//! The recruitment funnel's domain: pure data and decisions, no I/O.

pub mod ids;
pub mod privacy;

pub use ids::*;
pub use privacy::{ContactDetails, SealedContact};
