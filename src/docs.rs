//! The repository's two reference documents, here so that they are read with the API they
//! describe. Nothing in this module is code.

#[doc = include_str!("../FORMAT.md")]
pub mod format {}

#[doc = include_str!("../docs/design.md")]
pub mod design {}
