//! The scheduler: binds pods with no node to a node that fits them.
