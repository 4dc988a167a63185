//! Generated types and gRPC stubs for Cairn's native protocol (`cairn.proto`).
//!
//! Only generated code lives here. Conversions to the domain model, and all
//! validation of what arrives on the wire, live in `cairn-model`.

pub mod codec;

#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("cairn.v1");
}

pub use v1::*;
