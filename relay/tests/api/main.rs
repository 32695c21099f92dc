//! The relay's API tests: real HTTP over real loopback sockets against the real Router and stores.
//! One test binary (faster to link); one module per resource or concern.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_log;
mod connections;
mod disks;
mod durability;
mod dynamodb;
mod health;
mod helpers;
mod infra;
mod lambda;
mod layers;
mod messages;
mod openapi;
mod paste;
mod saved;
mod store_conformance;
mod telemetry;
