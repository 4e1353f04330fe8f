//! Placeholder: the core crate is being written.
