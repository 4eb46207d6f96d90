//! Iris node configuration: schema, defaults, validation.
