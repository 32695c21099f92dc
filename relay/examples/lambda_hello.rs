//! A bare lambda_http hello-world: what any Rust function behind API Gateway costs to start, built with
//! the same dependencies and profile as the relay so `bench/cold-start.sh` can compare the two side by
//! side. Not part of the product.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_: Request| async {
        Ok::<_, Error>(Response::new(Body::from("Hello, World!")))
    }))
    .await
}
