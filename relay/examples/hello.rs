//! A bare axum hello-world: the practical ceiling for an axum service on this machine, built with the
//! same dependencies and profile as the relay so benchmarks can compare the two side by side.
//! Usage: hello [ADDR] (default 127.0.0.1:8090). Not part of the product.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
