//! The HTTP layer: extract, make one domain call, map the result. No decisions, no Docker.

pub mod access;
pub mod error;
pub mod health;
pub mod json;
pub mod languages;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod run;
pub mod sessions;
pub mod terminal;

pub use error::ApiError;
