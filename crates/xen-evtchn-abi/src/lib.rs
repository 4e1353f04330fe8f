//! Placeholder: the ABI crate is being written.
#![no_std]
