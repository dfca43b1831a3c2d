//! Integration tests: the real server on a free port, the real engine, the real images.
//! One binary (see crates.io's convention); every module shares the helpers in `common`.

mod adversarial;
mod batch;
mod browser;
mod cluster;
mod common;
mod compile_cache;
mod connections;
mod dialects;
mod edge;
mod errors;
mod hardening;
mod health;
mod judge0;
mod keeper;
mod languages;
mod limits;
mod live;
mod logs;
mod nodes;
mod openapi;
mod outputs;
mod piston;
mod pool;
mod reuse;
mod rooms;
mod sessions;
mod shutdown;
