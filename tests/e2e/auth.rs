//! auth routes over HTTP.
