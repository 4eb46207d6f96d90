//! Token signing and verification (JWT) for Iris.
