//! Tests of the domain through its public API: one binary, to keep link times down.

mod codec;
mod journey_rules;
mod properties;
mod strategies;
mod study_rules;
mod support;
