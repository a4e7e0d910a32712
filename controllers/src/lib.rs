//! # ballast-controllers
//!
//! The controller manager's controllers and the scheduler. Not built yet:
//! see issue 6. This crate exports nothing until it works.
